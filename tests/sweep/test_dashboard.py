"""The embedded Dask cluster listens on loopback only (issue 21: its dashboard, which has no
password and can cancel tasks, listened on all interfaces during a sweep)."""

from __future__ import annotations

import pytest

from gradleak.cli.main import main as gradleak_main
from gradleak.sweep.engine import dashboard_address, start_client

distributed = pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")


def _listening(process: psutil.Process) -> list[str]:
    sockets = []
    for proc in [process, *process.children(recursive=True)]:
        try:
            sockets += [c.laddr.ip for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            continue
    return sockets


@pytest.mark.slow
def test_the_embedded_cluster_listens_on_loopback_only() -> None:
    before = set(_listening(psutil.Process()))
    client, cluster = start_client(workers=1)
    try:
        opened = [ip for ip in _listening(psutil.Process()) if ip not in before] or _listening(psutil.Process())
        assert opened, "the cluster opened no listening socket at all"
        assert all(ip in ("127.0.0.1", "::1") for ip in opened), opened
        assert cluster.dashboard_link.startswith("http://127.0.0.1:")
    finally:
        client.close()
        cluster.close()


def test_dashboard_addresses() -> None:
    assert dashboard_address(None) == "127.0.0.1:0"
    assert dashboard_address(":8787") == "127.0.0.1:8787"
    assert dashboard_address("0.0.0.0:8787") == "0.0.0.0:8787"  # asked for explicitly


def test_a_bad_dashboard_address_is_one_line(tmp_path, capsys) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[grid]\ndatasets = ["mnist"]\n')
    code = gradleak_main(["sweep", str(config), "--dashboard", "everywhere", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is not HOST:PORT" in err
    assert not (tmp_path / "s").exists()

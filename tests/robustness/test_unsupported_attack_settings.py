"""A run setting the chosen attack does not take is refused in one line (issue 21: the imprint
attack got ``--tv-weight``/``--clamp`` as keyword arguments and raised a ``TypeError``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradleak.cli.main import main as gradleak_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--scenario", "imprint", "--tv-weight", "0.1"], "--tv-weight applies to the analytic, dlg, idlg, ig, map, auto and spear attacks, not imprint"),
        (["--scenario", "imprint", "--clamp"], "--clamp applies to the analytic, dlg, idlg, ig, map, auto and spear attacks, not imprint"),
        (["--scenario", "imprint", "--attack", "imprint", "--restarts", "2"], "--restarts applies to the dlg, idlg, ig, auto and spear attacks, not imprint"),
        (["--attack", "dlg", "--noise-source", "published"], "--noise-source applies to the map and auto attacks, not dlg"),
    ],
)
def test_a_setting_the_attack_does_not_take_is_one_line(extra: list[str], needle: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code = gradleak_main(["run", "--dataset", "cifar100", "--split", "test", "--indices", "0", "1", *extra,
                          "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert needle in err and "drop it" in err
    assert not out.exists()

"""The sweep, report and utility commands: one-line errors, working happy paths."""

from __future__ import annotations

import pytest

from gradleak.cli.main import main


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_commands_are_registered(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("sweep", "report", "utility"):
        assert f"  {name}" in out


def test_sweep_errors_are_one_line(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in _err(capsys)
    bad = tmp_path / "bad.toml"
    bad.write_text('[grid]\ndatasets = ["mnist"]\nbatch = [1]\n')
    assert main(["sweep", str(bad)]) == 2
    assert "valid keys: datasets, models, attacks, scenarios" in _err(capsys)
    bad.write_text("[grid\n")
    assert main(["sweep", str(bad)]) == 2
    assert "not valid TOML" in _err(capsys)


def test_sweep_missing_argument_is_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["sweep"])
    assert info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_sweep_dry_run_lists_runs(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('[grid]\ndatasets = ["mnist"]\nindices = [0, 1]\ndefenses = ["none", "fp16"]\n')
    assert main(["sweep", str(config), "--dry-run", "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert out.count(" new ") == 4 and "4 runs (4 attack, 0 utility)" in out
    assert not (tmp_path / "s").exists()


def test_report_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in _err(capsys)
    assert main(["report", str(tmp_path)]) == 2
    assert "neither a sweep folder" in _err(capsys)


def test_utility_command(tmp_path, capsys):
    pytest.importorskip("sklearn")
    code = main(["utility", "--epochs", "1", "--train-size", "150", "--test-size", "60", "--defense", "gaussian:1e-2",
                 "--quiet", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "undefended: test accuracy" in out and "gaussian:0.01: test accuracy" in out and "cost" in out
    assert (tmp_path / "utility.json").is_file()
    assert main(["utility", "--dataset", "imagenet"]) == 2
    assert "unknown dataset 'imagenet'" in _err(capsys)
    assert main(["utility", "--epochs", "0"]) == 2
    assert "epochs must be at least 1" in _err(capsys)


def test_importing_gradleak_does_not_import_dask():
    import subprocess
    import sys

    code = (
        "import sys, gradleak, gradleak.sweep, gradleak.sweep.engine, gradleak.cli.main, gradleak.cli.sweep_commands, "
        "gradleak.report.sweep_report, gradleak.utility\n"
        "from gradleak.cli.commands import COMMANDS, command; [command(n) for n in COMMANDS if n != 'text']\n"
        "bad = [m for m in ('dask', 'distributed', 'sklearn') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _damaged_sweep(tmp_path, name: str):
    from .conftest import damage_page, write_store

    sweep = tmp_path / "s"
    sweep.mkdir()
    write_store(sweep / "store.sqlite")
    damage_page(sweep / "store.sqlite", name)
    return sweep


@pytest.mark.parametrize("page", ["runs", "runs_status", "events"])
def test_report_on_a_damaged_store_fails_with_one_line(tmp_path, capsys, page):
    sweep = _damaged_sweep(tmp_path, page)
    assert main(["report", str(sweep)]) == 2  # was 0 (or a traceback) on a damaged store
    err = _err(capsys)
    assert f"sweep store {sweep / 'store.sqlite'} is damaged" in err and "move it aside" in err
    assert not (sweep / "report" / "report.html").exists()


def test_sweep_on_a_damaged_store_fails_with_one_line(tmp_path, capsys):
    sweep = _damaged_sweep(tmp_path, "runs")
    config = tmp_path / "c.toml"
    config.write_text('[grid]\ndatasets = ["mnist"]\nindices = [0, 1]\n[run]\nsplit = "test"\n')
    for extra in ([], ["--dry-run"]):
        assert main(["sweep", str(config), "--out", str(sweep), *extra]) == 2
        err = _err(capsys)
        assert "is damaged" in err and str(sweep / "store.sqlite") in err


def test_dry_run_with_an_empty_store_file(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('[grid]\ndatasets = ["mnist"]\nindices = [0, 1]\n')
    sweep = tmp_path / "s"
    sweep.mkdir()
    (sweep / "store.sqlite").write_bytes(b"")
    assert main(["sweep", str(config), "--dry-run", "--out", str(sweep)]) == 0  # was: no such table: runs
    captured = capsys.readouterr()
    assert "is empty (0 bytes)" in captured.out and captured.out.count(" new ") == 2
    assert "Traceback" not in captured.err
    assert main(["report", str(sweep)]) == 2
    assert "is empty (0 bytes)" in _err(capsys)


def test_sweep_max_runs_flag(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('[grid]\ndatasets = ["mnist"]\nindices = [0, 1, 2]\ndefenses = ["none", "fp16"]\n')
    out = str(tmp_path / "s")
    assert main(["sweep", str(config), "--dry-run", "--out", out, "--max-runs", "5"]) == 2
    err = _err(capsys)
    assert "the grid has 6 runs (3 indices x 2 defenses" not in err and "the grid has 6 runs (2 defenses x 3 indices)" in err
    assert "pass --max-runs 6 to expand it anyway" in err
    assert main(["sweep", str(config), "--dry-run", "--out", out, "--max-runs", "6"]) == 0
    assert "6 runs (6 attack, 0 utility)" in capsys.readouterr().out
    assert main(["sweep", str(config), "--dry-run", "--out", out, "--max-runs", "0"]) == 2
    assert "--max-runs must be at least 1" in _err(capsys)


def test_sweep_name_cannot_leave_the_sweeps_folder(tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"  # sweeps/../../escaped from here is tmp_path/escaped
    work.mkdir()
    monkeypatch.chdir(work)
    config = tmp_path / "c.toml"
    config.write_text('[sweep]\nname = "../../escaped"\n[grid]\ndatasets = ["mnist"]\n[run]\nsplit = "test"\n')
    assert main(["sweep", str(config), "--no-report", "--quiet"]) == 2
    assert "is not a plain folder name" in _err(capsys)
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()

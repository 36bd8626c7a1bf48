"""Grid expansion: counts, stable ids, validation, and the shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradleak.errors import GradleakError
from gradleak.sweep.grid import load_plan, parse_plan

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def plan(text: str):
    return parse_plan(text, default_name="t", where="t.toml")


def test_grid_is_the_full_product():
    p = plan(
        """
        [grid]
        datasets = ["mnist"]
        attacks = ["dlg", "idlg"]
        defenses = ["none", "gaussian:1e-3", ["prune:0.1", "fp16"]]
        batch_sizes = [1, 2]
        indices = [0, 4]
        seeds = [1, 2]
        """
    )
    assert len(p.runs) == 2 * 3 * 2 * 2 * 2
    assert len({r.run_id for r in p.runs}) == len(p.runs)
    batch2 = [r for r in p.runs if r.axes["batch_size"] == 2 and r.axes["index"] == 4]
    assert all(r.config["indices"] == [4, 5] for r in batch2)
    stacked = [r for r in p.runs if r.axes["defense"] == "prune:0.1+fp16"]
    assert stacked and stacked[0].config["defenses"] == ["prune:0.1", "fp16"]
    assert {r.config["model"] for r in p.runs} == {"lenetmnist"}  # "default" resolved
    # sweep defaults: offline, CPU, pictures for the report
    r = p.runs[0]
    assert r.config["device"] == "cpu" and r.config["download"] is False and r.config["save_final"] is True


def test_local_steps_only_multiply_fedavg_runs():
    p = plan(
        """
        [grid]
        datasets = ["mnist"]
        attacks = ["ig"]
        scenarios = ["fedsgd", "fedavg"]
        local_steps = [1, 2, 5]
        indices = [0]
        """
    )
    fedsgd = [r for r in p.runs if r.axes["scenario"] == "fedsgd"]
    fedavg = [r for r in p.runs if r.axes["scenario"] == "fedavg"]
    assert len(fedsgd) == 1 and fedsgd[0].config["local_steps"] == 1
    assert sorted(r.config["local_steps"] for r in fedavg) == [1, 2, 5]


def test_ids_are_stable_and_canonical():
    base = """
    [grid]
    datasets = ["mnist"]
    defenses = [{d}]
    indices = [0, 1]
    [run]
    split = "test"
    iterations = {it}
    data_root = "{root}"
    device = "{dev}"
    """
    a = plan(base.format(d='"gaussian:1e-3"', it=10, root="./data", dev="cpu"))
    b = plan(base.format(d='"gaussian:0.001"', it=10, root="/elsewhere", dev="cuda"))
    c = plan(base.format(d='"gaussian:1e-3"', it=11, root="./data", dev="cpu"))
    ids = [r.run_id for r in a.runs]
    assert ids == [r.run_id for r in plan(base.format(d='"gaussian:1e-3"', it=10, root="./data", dev="cpu")).runs]
    assert ids == [r.run_id for r in b.runs]  # same spec, where data lives and the device do not matter
    assert not set(ids) & {r.run_id for r in c.runs}  # a different setting is a different run
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)


def test_per_attack_settings_override_run():
    p = plan(
        """
        [grid]
        datasets = ["mnist"]
        attacks = ["idlg", "auto"]
        [run]
        iterations = 40
        [per_attack.auto]
        iterations = 300
        tv_weight = 1e-4
        clamp = true
        """
    )
    by = {r.axes["attack"]: r.config for r in p.runs}
    # unset: the attack keeps its own default (idlg: no TV prior)
    assert by["idlg"]["iterations"] == 40 and by["idlg"]["tv_weight"] is None
    assert by["auto"]["iterations"] == 300 and by["auto"]["clamp"] is True


def test_models_that_do_not_fit_are_skipped_and_listed():
    p = plan(
        """
        [grid]
        datasets = ["mnist", "cifar10"]
        models = ["lenet", "lenetmnist"]
        """
    )
    assert sorted((r.axes["dataset"], r.axes["model"]) for r in p.runs) == [("cifar10", "lenet"), ("mnist", "lenetmnist")]
    assert len(p.skipped) == 2


def test_utility_runs_include_the_undefended_baseline():
    p = plan(
        """
        [grid]
        datasets = ["mnist"]
        defenses = ["gaussian:1e-2", "prune:0.5"]
        [utility]
        epochs = 1
        seeds = [0, 1]
        """
    )
    util = p.utility_runs
    assert sorted({r.axes["defense"] for r in util}) == ["gaussian:0.01", "none", "prune:0.5"]
    assert len(util) == 3 * 2 and len(p.attack_runs) == 2
    assert all(r.config["dataset"] == "digits" for r in util)


@pytest.mark.parametrize(
    "text, needle",
    [
        ('[grid]\ndatasets = ["mnist"]\nbatchsize = [1]', "valid keys: datasets, models, attacks"),
        ('[grid]\ndatasets = ["mnist"]\n[run]\nout = "x"', "unknown key 'out' in [run]; valid keys:"),
        ('[grid]\ndatasets = ["mnist"]\n[runs]\niterations = 3', "unknown key 'runs' in the config (tables)"),
        ('[grid]\ndatasets = ["mnist"]\n[sweep]\ntitle = "x"', "valid keys: name, description, success_psnr"),
        ('[grid]\ndatasets = ["mnist"]\n[utility]\nepoch = 1', "valid keys: dataset, model, defenses, epochs"),
        ("[grid]\nmodels = ['lenet']", "[grid] needs datasets"),
        ('[grid]\ndatasets = ["imagenet"]', "unknown dataset 'imagenet'"),
        ('[grid]\ndatasets = ["mnist"]\nattacks = ["dgl"]', "unknown attack 'dgl'"),
        ('[grid]\ndatasets = ["mnist"]\ndefenses = ["gauss:1"]', "bad defense 'gauss:1'"),
        ('[grid]\ndatasets = ["mnist"]\nindices = [-1]', "grid.indices must be >= 0"),
        ('[grid]\ndatasets = ["mnist"]\nbatch_sizes = [1.5]', "grid.batch_sizes must be whole numbers"),
        ('[grid]\ndatasets = ["mnist"]\nseeds = []', "grid.seeds is empty"),
        ('[grid]\ndatasets = ["mnist"]\n[run]\niterations = "many"', "run.iterations must be a whole number"),
        ('[grid]\ndatasets = ["mnist"]\n[run]\niterations = 0', "run.iterations must be at least 1"),
        ('[grid]\ndatasets = ["mnist"]\n[per_attack.nope]\niterations = 3', "unknown attack 'nope'"),
        ('[grid\ndatasets = ["mnist"]', "is not valid TOML"),
        ('grid = 3', "[grid] must be a table"),
    ],
)
def test_bad_configs_are_one_line_errors(text, needle):
    with pytest.raises(GradleakError) as info:
        plan(text)
    message = str(info.value)
    assert needle in message and "\n" not in message and message.startswith("t.toml")


def test_missing_config_file(tmp_path):
    with pytest.raises(GradleakError, match="does not exist"):
        load_plan(tmp_path / "nope.toml")
    with pytest.raises(GradleakError, match="is not a file"):
        load_plan(tmp_path)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_expand(path):
    from gradleak.data.public import max_tiled_index

    p = load_plan(path)
    assert p.runs and p.name == path.stem
    if path.stem.endswith("_small"):
        # offline: bundled test images 0..19, no download
        for r in p.attack_runs:
            assert r.config["split"] == "test" and r.config["download"] is False
            # (or their tiled copies, --tile-bundled: offline as well)
            assert max(r.config["indices"]) <= (max_tiled_index() if r.config.get("tile_bundled") else 19)


def test_shipped_configs_cover_the_issue():
    names = {p.stem for p in CONFIGS.glob("*.toml")}
    for stem in ("dlg_defenses", "batch_size", "fedavg_steps"):
        assert stem in names and f"{stem}_small" in names
    small = load_plan(CONFIGS / "dlg_defenses_small.toml")
    defenses = {r.axes["defense"] for r in small.attack_runs}
    for want in ("gaussian:0.0001", "gaussian:0.1", "fp16", "int8", "prune:0.01", "prune:0.7", "none"):
        assert want in defenses
    assert {r.axes["batch_size"] for r in load_plan(CONFIGS / "batch_size_small.toml").runs} == {1, 2, 4, 8}
    assert {r.axes["local_steps"] for r in load_plan(CONFIGS / "fedavg_steps_small.toml").runs} == {1, 2, 5}


def test_a_huge_grid_is_refused_before_it_is_expanded():
    import time

    seeds = ", ".join(str(i) for i in range(1000))
    indices = ", ".join(str(i) for i in range(100))
    text = (f'[grid]\ndatasets = ["mnist", "cifar10"]\nattacks = ["idlg", "ig", "dlg", "auto"]\n'
            f'defenses = ["none", "fp16", "int8", "gaussian:1e-3", "gaussian:1e-2"]\nbatch_sizes = [1, 2, 4, 8, 16]\n'
            f'indices = [{indices}]\nseeds = [{seeds}]\n')  # 20,000,000 runs: expanding them never finished
    start = time.perf_counter()
    with pytest.raises(GradleakError, match=r"big.toml: the grid has 20,000,000 runs \(2 datasets x 4 attacks x 5 defenses "
                       r"x 5 batch sizes x 100 indices x 1000 seeds\), more than the limit of 100,000: "
                       r"shrink the grid, or pass --max-runs 20000000"):
        parse_plan(text, where="big.toml")
    assert time.perf_counter() - start < 5  # counted, not expanded (measured well under 1 s)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_the_count_before_expansion_is_exact(path):
    planned = len(load_plan(path, max_runs=None).runs)  # fedavg local steps and utility runs included
    assert len(load_plan(path, max_runs=planned).runs) == planned
    with pytest.raises(GradleakError, match=rf"the grid has {planned:,} runs .* --max-runs {planned}"):
        load_plan(path, max_runs=planned - 1)


@pytest.mark.parametrize("name", ["../../../tmp/x", "/tmp/x", "a/b", "..", ".", "a\\\\b", "x\\ny", "C:evil"])
def test_sweep_names_that_are_paths_are_refused(name):
    text = f'[sweep]\nname = "{name}"\n[grid]\ndatasets = ["mnist"]\n'
    with pytest.raises(GradleakError, match=r"c.toml: sweep.name .* is not a plain folder name \(the sweep goes to sweeps/<name>\)"):
        parse_plan(text, where="c.toml")


def test_plain_sweep_names_are_kept():
    for name in ("dlg_defenses_small", "batch size 8", "v1.2"):
        assert parse_plan(f'[sweep]\nname = "{name}"\n[grid]\ndatasets = ["mnist"]\n').name == name

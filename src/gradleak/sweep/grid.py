"""Sweep configs (TOML) and their expansion into independent runs with stable ids.

Config schema
=============

A sweep config is a TOML file with up to four tables; every key is optional except
``grid.datasets``. Unknown tables or keys are refused with the list of valid ones::

    [sweep]
    name = "dlg_defenses_small"    # default: the file name without .toml
    description = "..."            # free text, shown in the report
    success_psnr = 30.0            # an image counts as recovered when its PSNR >= this (dB)

    [grid]                         # each key a list (a lone value counts as a list of one);
                                   # the runs are the Cartesian product of all of them
    datasets    = ["mnist"]        # gradleak dataset names
    models      = ["default"]      # model names; "default" = the dataset's default model.
                                   # model/dataset pairs that do not fit are skipped (listed)
    attacks     = ["idlg"]         # gradleak.attacks.ATTACKS names
    scenarios   = ["fedsgd"]       # fedsgd | fedavg | secagg | imprint
    defenses    = ["none", "gaussian:1e-3", ["prune:0.1", "fp16"]]
                                   # "none" (or "") = undefended; a spec as for --defense;
                                   # a list of specs stacks them, applied in order
    batch_sizes = [1]              # images per shared update
    indices     = [0, 1, 2]        # first dataset index of each batch: batch size B at
                                   # index i uses images i, i+1, ..., i+B-1
    seeds       = [1234]           # RunConfig.seed (dummy init, model init, defense noise)
    local_steps = [1]              # FedAvg local steps E (ignored, i.e. 1, for fedsgd)
    clients     = [2]              # secagg (and imprint): clients whose updates are aggregated;
                                   # each batch is split evenly among them (default: 2 for
                                   # secagg, 1 for imprint; ignored for the other scenarios)
    bins        = [1024]           # imprint: bins of the malicious server's block (ignored
                                   # for the other scenarios)
    weights     = ["none", "ckpt/lenet.safetensors"]
                                   # "none" = the model at initialisation; a path = a checkpoint
                                   # (gradleak train), relative to the working directory. Each
                                   # file is read (safely) and its sha256 pinned when the plan is
                                   # made; a run refuses a file that changed since. Model/weights
                                   # pairs whose architecture or input shape differ are skipped

    [run]                          # fixed RunConfig settings shared by every run, e.g.
    split = "test"                 # train | test | extra ("test" + indices 0..19: bundled, offline)
    tile_bundled = false           # with split "test": indices 20.. are mirrored/shifted copies
                                   # of the 20 bundled images (large batches offline)
    iterations = 40
    tv_weight = 0.0                # unset: each attack's own default (dlg/idlg 0, ig/auto 1e-4)
    clamp = false                  # unset: each attack's own default (dlg off, ig/auto on)
    local_lr = 1e-4                # FedAvg client learning rate
    device = "cpu"                 # cpu | cuda | cuda:N (cuda runs need a GPU worker resource)
    data_root = "./data"
    download = false
    num_classes = 10               # override the dataset's class count (rarely needed)
    save_final = true              # write recon.png / target.png (the report's image grid)
    save_history = false

    [per_attack.auto]              # optional: [run] settings for one attack only, overriding
    iterations = 300               # [run] (e.g. few L-BFGS steps for idlg, more Adam steps and
    tv_weight = 1e-4               # the TV prior / box constraint for ig and auto)
    clamp = true

    [utility]                      # optional: test accuracy when training under each defense
    dataset    = "digits"          # "digits" (scikit-learn's bundled 8x8 digits, offline) or a
                                   # gradleak dataset (full data on disk / downloaded)
    model      = "default"
    defenses   = [...]             # default: grid.defenses
    epochs     = 5
    batch_size = 16
    lr         = 0.1
    momentum   = 0.0
    seeds      = [0]
    train_size = 0                 # 0 = the whole training split
    test_size  = 0                 # 0 = the whole test split
    device     = "cpu"

A grid is counted (the product of its axis lengths) before it is expanded: above
``DEFAULT_MAX_RUNS`` (100,000) runs it is refused with the count, since expanding it alone takes
minutes and gigabytes (1,000,000 runs: 62 s, 1.8 GB); ``gradleak sweep --max-runs N`` raises the
limit.

A secagg or imprint run's ``scenario`` axis carries its parameters (``secagg:clients=4``,
``imprint:bins=256``), so reports group and plot them as separate settings.

Each run's id is a hash of its canonical config (defense specs normalised, so ``1e-3`` and
``0.001`` are one run; output paths, ``device``, ``data_root`` and ``download`` are not part of
it), so re-running a sweep, or another sweep with an overlapping grid, finds finished runs. A checkpoint
enters the id by its sha256, not its path: moving the file keeps the ids, re-training changes them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from gradleak.errors import GradleakError

SCHEMA_VERSION = 1

GRID_KEYS = (
    "datasets", "models", "attacks", "scenarios", "defenses", "batch_sizes", "indices", "seeds", "local_steps",
    "clients", "bins", "weights",
)
SWEEP_KEYS = ("name", "description", "success_psnr")
TABLES = ("sweep", "grid", "run", "per_attack", "utility")
# RunConfig fields a sweep sets per run (from the grid) or never (outputs): not allowed in [run].
_RUN_FORBIDDEN = {
    "dataset", "indices", "images", "labels", "model", "attack", "scenario", "defenses", "seed",
    "local_steps", "clients", "bins", "out", "overwrite", "quiet", "weights", "weights_sha256",
}
# Fields that do not change a run's result and so are not part of its id.
_NOT_IN_ID = {"out", "overwrite", "quiet", "save_history", "save_final", "download", "data_root", "device", "weights"}
# RunConfig fields as of schema 1: always hashed. Fields added later are hashed only when they
# differ from their default, so that adding a field does not change every existing id.
_CORE_RUN_FIELDS = {
    "dataset", "indices", "images", "labels", "num_classes", "split", "iterations", "seed", "model",
    "attack", "tv_weight", "clamp", "scenario", "local_steps", "local_lr", "defenses",
}
SWEEP_RUN_DEFAULTS: dict[str, Any] = {"device": "cpu", "download": False, "save_final": True}
DEFAULT_SUCCESS_PSNR = 30.0
DEFAULT_MAX_RUNS = 100_000  # runs a grid may expand to unless raised (gradleak sweep --max-runs)


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: what to execute (``config``) and where it sits in the grid (``axes``).

    ``kind`` is ``"attack"`` (``config`` holds :class:`~gradleak.experiment.RunConfig` fields)
    or ``"utility"`` (``config`` holds :class:`~gradleak.utility.UtilityConfig` fields).
    """

    run_id: str
    kind: str
    label: str
    config: dict[str, Any]
    axes: dict[str, Any]


@dataclass
class SweepPlan:
    name: str
    description: str
    success_psnr: float
    runs: list[PlannedRun]
    skipped: list[str] = field(default_factory=list)
    source: str = ""
    path: str | None = None

    @property
    def attack_runs(self) -> list[PlannedRun]:
        return [r for r in self.runs if r.kind == "attack"]

    @property
    def utility_runs(self) -> list[PlannedRun]:
        return [r for r in self.runs if r.kind == "utility"]


def _toml() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:  # pragma: no cover - Python 3.10 only
        import tomli

        return tomli
    except ImportError:  # pragma: no cover
        raise GradleakError("reading sweep configs on Python 3.10 needs tomli: pip install tomli") from None


def load_plan(path: str | Path, *, max_runs: int | None = DEFAULT_MAX_RUNS) -> SweepPlan:
    """Read and expand a sweep config file; every problem is one GradleakError line."""
    path = Path(path)
    if not path.exists():
        raise GradleakError(f"sweep config {path} does not exist: give a .toml file (see configs/)")
    if not path.is_file():
        raise GradleakError(f"sweep config {path} is not a file: give a .toml file (see configs/)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise GradleakError(f"cannot read sweep config {path}: {error}") from None
    plan = parse_plan(text, default_name=path.stem, where=str(path), max_runs=max_runs)
    plan.path = str(path)
    return plan


def parse_plan(text: str, *, default_name: str = "sweep", where: str = "config",
               max_runs: int | None = DEFAULT_MAX_RUNS) -> SweepPlan:
    toml = _toml()
    try:
        data = toml.loads(text)
    except toml.TOMLDecodeError as error:
        raise GradleakError(f"{where} is not valid TOML: {error}") from None
    try:
        plan = expand(data, default_name=default_name, where=where, max_runs=max_runs)
    except GradleakError as error:
        message = str(error)
        raise GradleakError(message if message.startswith(f"{where}:") else f"{where}: {message}") from None
    plan.source = text
    return plan


# --------------------------------------------------------------------------- value checking


def is_plain_name(name: str) -> bool:
    """Whether ``name`` is one folder name: no separator, not ``.``/``..``, no control characters.

    The sweep name becomes ``sweeps/<name>``; ``"../../../tmp/x"`` or ``"/etc"`` would write elsewhere.

    Example:
        >>> [is_plain_name(n) for n in ("dlg_defenses_small", "run 2", "../x", "a/b", "..", "/etc")]
        [True, True, False, False, False, False]
    """
    return (
        bool(name)
        and name not in (".", "..")
        and not any(c in name for c in "/\\:")
        and all(c.isprintable() for c in name)
        and Path(name).name == name
        and not Path(name).is_absolute()
    )


def _unknown(keys: Sequence[str], valid: Sequence[str], what: str, where: str) -> None:
    bad = [k for k in keys if k not in valid]
    if bad:
        raise GradleakError(
            f"{where}: unknown key{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))} in {what}; "
            f"valid keys: {', '.join(valid)}"
        )


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _ints(value: Any, key: str, where: str, *, low: int) -> list[int]:
    out = []
    for v in _as_list(value):
        if isinstance(v, bool) or not isinstance(v, int):
            raise GradleakError(f"{where}: {key} must be whole numbers (got {v!r})")
        if v < low:
            raise GradleakError(f"{where}: {key} must be >= {low} (got {v})")
        out.append(v)
    if not out:
        raise GradleakError(f"{where}: {key} is empty: give at least one value")
    return list(dict.fromkeys(out))


def _strings(value: Any, key: str, where: str) -> list[str]:
    out = []
    for v in _as_list(value):
        if not isinstance(v, str):
            raise GradleakError(f"{where}: {key} must be strings (got {v!r})")
        out.append(v.strip())
    if not out:
        raise GradleakError(f"{where}: {key} is empty: give at least one value")
    return list(dict.fromkeys(out))


def canonical_defenses(entry: Any, where: str) -> list[str]:
    """One grid ``defenses`` entry → the canonical spec list (``[]`` for none)."""
    from gradleak.defenses import parse_defenses

    specs = entry if isinstance(entry, list) else [entry]
    for spec in specs:
        if not isinstance(spec, str):
            raise GradleakError(f"{where}: a defenses entry must be a spec string or a list of them (got {spec!r})")
    specs = [s.strip() for s in specs if s.strip().lower() not in ("", "none")]
    return [d.name for d in parse_defenses(specs)]


def defense_label(specs: Sequence[str]) -> str:
    return "+".join(specs) if specs else "none"


def _defense_entries(value: Any, key: str, where: str) -> list[list[str]]:
    raw = value if isinstance(value, list) else [value]
    if not raw:
        raise GradleakError(f"{where}: {key} is empty: give at least one entry (\"none\" = undefended)")
    out: list[list[str]] = []
    for entry in raw:
        specs = canonical_defenses(entry, where)
        if specs not in out:
            out.append(specs)
    return out


def _typed(value: Any, default: Any, key: str, where: str, *, optional_int: bool = False) -> Any:
    """Check ``value`` against the type of a field's default."""
    if optional_int:
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise GradleakError(f"{where}: {key} must be a whole number (got {value!r})")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise GradleakError(f"{where}: {key} must be true or false (got {value!r})")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise GradleakError(f"{where}: {key} must be a whole number (got {value!r})")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise GradleakError(f"{where}: {key} must be a number (got {value!r})")
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise GradleakError(f"{where}: {key} must be a string (got {value!r})")
    return value


def _dataclass_defaults(cls: type) -> dict[str, Any]:
    out = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


def run_id_for(kind: str, identity: Mapping[str, Any]) -> str:
    """Stable id: sha256 of the canonical JSON of the run's identity, 16 hex digits."""
    canonical = json.dumps({"kind": kind, "schema": SCHEMA_VERSION, **identity}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def attack_identity(config: Mapping[str, Any]) -> dict[str, Any]:
    from gradleak.experiment import RunConfig

    defaults = _dataclass_defaults(RunConfig)
    return {
        k: v
        for k, v in config.items()
        if k not in _NOT_IN_ID and (k in _CORE_RUN_FIELDS or v != defaults.get(k, object()))
    }


# --------------------------------------------------------------------------- expansion


def valid_run_keys() -> list[str]:
    from gradleak.experiment import RunConfig

    return [f.name for f in fields(RunConfig) if f.name not in _RUN_FORBIDDEN]


def expand(data: Mapping[str, Any], *, default_name: str = "sweep", where: str = "config",
           max_runs: int | None = DEFAULT_MAX_RUNS) -> SweepPlan:
    """Validate a parsed config and expand it into runs (attack runs first, then utility).

    The grid is counted first; more than ``max_runs`` runs (None: no limit) is a GradleakError
    that gives the count and how to raise the limit, before anything is expanded.
    """
    from gradleak.attacks import ATTACKS
    from gradleak.data import get_spec
    from gradleak.experiment import RunConfig
    from gradleak.models import MODELS, default_model
    from gradleak.scenarios import SCENARIOS

    if not isinstance(data, Mapping):
        raise GradleakError(f"{where}: expected TOML tables {', '.join(TABLES)}")
    _unknown(list(data), TABLES, "the config (tables)", where)
    for table in data:
        if not isinstance(data[table], Mapping):
            raise GradleakError(f"{where}: [{table}] must be a table (write it as [{table}] with keys under it)")
    sweep = dict(data.get("sweep", {}))
    grid = dict(data.get("grid", {}))
    run = dict(data.get("run", {}))
    _unknown(list(sweep), SWEEP_KEYS, "[sweep]", where)
    _unknown(list(grid), GRID_KEYS, "[grid]", where)
    _unknown(list(run), valid_run_keys(), "[run]", where)

    name = sweep.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise GradleakError(f"{where}: sweep.name must be a non-empty string")
    if not is_plain_name(name.strip()):
        raise GradleakError(
            f"{where}: sweep.name {name.strip()!r} is not a plain folder name (the sweep goes to sweeps/<name>): "
            "use letters, digits, '-', '_', '.' or spaces, without '/', '\\' or '..'"
        )
    description = sweep.get("description", "")
    if not isinstance(description, str):
        raise GradleakError(f"{where}: sweep.description must be a string")
    success = sweep.get("success_psnr", DEFAULT_SUCCESS_PSNR)
    if isinstance(success, bool) or not isinstance(success, (int, float)):
        raise GradleakError(f"{where}: sweep.success_psnr must be a number of dB (got {success!r})")

    if "datasets" not in grid:
        raise GradleakError(f"{where}: [grid] needs datasets, e.g. datasets = [\"mnist\"]")
    datasets = [get_spec(d).name for d in _strings(grid["datasets"], "grid.datasets", where)]
    models = _strings(grid.get("models", ["default"]), "grid.models", where)
    for m in models:
        if m != "default":
            MODELS.get(m)
    attacks = _strings(grid.get("attacks", ["idlg"]), "grid.attacks", where)
    for a in attacks:
        ATTACKS.get(a)
    scenarios = _strings(grid.get("scenarios", ["fedsgd"]), "grid.scenarios", where)
    for s in scenarios:
        SCENARIOS.get(s)
    defenses = _defense_entries(grid.get("defenses", ["none"]), "grid.defenses", where)
    batch_sizes = _ints(grid.get("batch_sizes", [1]), "grid.batch_sizes", where, low=1)
    indices = _ints(grid.get("indices", [0]), "grid.indices", where, low=0)
    seeds = _ints(grid.get("seeds", [1234]), "grid.seeds", where, low=0)
    local_steps = _ints(grid.get("local_steps", [1]), "grid.local_steps", where, low=1)
    client_counts = _ints(grid.get("clients", [0]), "grid.clients", where, low=0 if "clients" not in grid else 1)
    bin_counts = _ints(grid.get("bins", [0]), "grid.bins", where, low=0 if "bins" not in grid else 2)
    weights = _weights_entries(grid.get("weights", ["none"]), where)

    run_defaults = _dataclass_defaults(RunConfig)
    fixed: dict[str, Any] = dict(SWEEP_RUN_DEFAULTS)
    fixed.update(_run_settings(run, "run", run_defaults, where))
    per_attack: dict[str, dict[str, Any]] = {}
    for attack_name, table in dict(data.get("per_attack", {})).items():
        ATTACKS.get(attack_name)
        if not isinstance(table, Mapping):
            raise GradleakError(f"{where}: [per_attack.{attack_name}] must be a table of [run] settings")
        _unknown(list(table), valid_run_keys(), f"[per_attack.{attack_name}]", where)
        per_attack[attack_name] = _run_settings(table, f"per_attack.{attack_name}", run_defaults, where)

    runs: list[PlannedRun] = []
    seen: set[str] = set()
    skipped: list[str] = []
    fitting_models: dict[str, list[str]] = {}
    for dataset in datasets:
        spec = get_spec(dataset)
        fitting = fitting_models.setdefault(dataset, [])
        for model in models:
            resolved = default_model(spec.channels, spec.image_size) if model == "default" else model
            model_spec = MODELS.get(resolved)
            if model_spec.channels is not None and (model_spec.channels, model_spec.image_size) != (spec.channels, spec.image_size):
                skipped.append(f"model {resolved} does not fit {dataset} ({spec.channels}x{spec.image_size}x{spec.image_size})")
                continue
            if resolved not in fitting:
                fitting.append(resolved)
    # Count before expanding: a product of axis lengths is instant, the expansion is not.
    scenario_axes = {"local_steps": local_steps, "clients": client_counts, "bins": bin_counts}

    def settings_of(scenario: str) -> int:  # the axes a scenario reads (uneven client splits are skipped later)
        count = 1
        for setting in SCENARIOS.get(scenario).run_settings:
            count *= len(scenario_axes.get(setting, [None]))
        return count

    per_model = len(attacks) * len(defenses) * len(batch_sizes) * len(indices) * len(seeds) * sum(
        settings_of(s) for s in scenarios
    )
    count = per_model * sum(len(f) for f in fitting_models.values()) * len(weights)
    utility = data.get("utility")
    if isinstance(utility, Mapping):
        trained = _defense_entries(utility["defenses"], "utility.defenses", where) if "defenses" in utility else defenses
        seeds_trained = _ints(utility.get("seeds", [0]), "utility.seeds", where, low=0)
        count += len(seeds_trained) * (len(trained) + ([] not in trained))  # + the undefended baseline
    if max_runs is not None and count > max_runs:
        axes = " x ".join(f"{n} {k}" for k, n in (
            ("datasets", len(datasets)), ("models", len(models)), ("attacks", len(attacks)),
            ("scenarios", len(scenarios)), ("defenses", len(defenses)), ("batch sizes", len(batch_sizes)),
            ("indices", len(indices)), ("seeds", len(seeds)), ("local steps", len(local_steps)),
        ) if n > 1) or "1"
        raise GradleakError(
            f"{where}: the grid has {count:,} runs ({axes}), more than the limit of {max_runs:,}: "
            f"shrink the grid, or pass --max-runs {count} to expand it anyway"
        )
    for dataset in datasets:
        spec = get_spec(dataset)
        fitting = fitting_models[dataset]
        for model, checkpoint, attack, scenario, specs, batch, start, seed, steps, clients, bins in itertools.product(
            fitting, weights, attacks, scenarios, defenses, batch_sizes, indices, seeds, local_steps, client_counts,
            bin_counts,
        ):
            if checkpoint is not None:
                reason = checkpoint.misfit(model, spec)
                if reason:
                    if reason not in skipped:
                        skipped.append(reason)
                    continue
            reads = SCENARIOS.get(scenario).run_settings
            steps = steps if "local_steps" in reads else 1
            clients = (clients or None) if "clients" in reads else None
            bins = (bins or None) if "bins" in reads else None
            if clients is not None and (clients > batch or batch % clients):
                why = f"{scenario} with {clients} clients: a batch of {batch} cannot be split evenly among them"
                if why not in skipped:
                    skipped.append(why)
                continue
            config = {**run_defaults, **fixed, **per_attack.get(attack, {})}
            config.update(
                dataset=dataset,
                indices=list(range(start, start + batch)),
                model=model,
                attack=attack,
                scenario=scenario,
                defenses=list(specs),
                seed=seed,
                local_steps=steps,
                clients=clients,
                bins=bins,
            )
            if "local_lr" not in reads:
                config["local_lr"] = run_defaults["local_lr"]
            if checkpoint is not None:
                config.update(weights=checkpoint.path, weights_sha256=checkpoint.sha256)
            run_id = run_id_for("attack", attack_identity(config))
            if run_id in seen:
                continue
            seen.add(run_id)
            axes = {
                "dataset": dataset,
                "model": model,
                "attack": attack,
                "scenario": scenario_label(scenario, clients=clients, bins=bins),
                "defense": defense_label(specs),
                "batch_size": batch,
                "index": start,
                "seed": seed,
                "local_steps": steps,
                "clients": clients,
                "bins": bins,
                "weights": checkpoint.label if checkpoint is not None else "init",
            }
            label = (
                f"{dataset}/{model}/{attack}/{scenario_label(scenario, clients=clients, bins=bins)}"
                f"{f'-E{steps}' if 'local_steps' in reads else ''}/"
                f"{defense_label(specs)}/b{batch}/i{start}/s{seed}"
                + (f"/w-{checkpoint.label}" if checkpoint is not None else "")
            )
            runs.append(PlannedRun(run_id=run_id, kind="attack", label=label, config=config, axes=axes))

    if "utility" in data:
        runs.extend(_expand_utility(dict(data["utility"]), defenses, fixed, where, seen))
    if not runs:
        raise GradleakError(f"{where}: the grid expands to no runs ({'; '.join(skipped) or 'empty grid'})")
    return SweepPlan(
        name=name.strip(), description=description, success_psnr=float(success), runs=runs, skipped=skipped
    )


def scenario_label(scenario: str, *, clients: int | None = None, bins: int | None = None) -> str:
    """The scenario axis value, as the scenario declares it (``fedsgd``, ``secagg:clients=4``,
    ``imprint:bins=256``, ``imprint:bins=256,clients=4``)."""
    from gradleak.scenarios import SCENARIOS

    return SCENARIOS.get(scenario).label({"clients": clients, "bins": bins})


@dataclass(frozen=True)
class _Weights:
    """One grid.weights checkpoint, read and pinned when the plan is made."""

    label: str  # the file name, as the report shows it
    path: str  # absolute
    sha256: str
    architecture: str | None
    channels: int | None
    image_size: int | None

    def misfit(self, model: str, spec: Any) -> str | None:
        """Why this checkpoint cannot serve ``model`` on dataset ``spec`` (None: it fits, as far as its
        metadata says; the run itself checks every tensor's shape)."""
        from gradleak.models import MODELS

        if self.architecture is not None and self.architecture != model:
            return f"weights {self.label} ({self.architecture}) do not fit model {model} on {spec.name}"
        size_matters = MODELS.get(model).image_size is not None
        if self.channels is not None and self.image_size is not None and (
            self.channels != spec.channels or (size_matters and self.image_size != spec.image_size)
        ):
            return (f"weights {self.label} ({self.channels}x{self.image_size}x{self.image_size}) do not fit "
                    f"{spec.name} ({spec.channels}x{spec.image_size}x{spec.image_size})")
        return None


def _weights_entries(value: Any, where: str) -> list[_Weights | None]:
    """grid.weights → None (initialisation) or a pinned checkpoint per entry."""
    from gradleak.models.checkpoint import read_checkpoint

    out: list[_Weights | None] = []
    for entry in _strings(value, "grid.weights", where):
        if entry.lower() in ("", "none", "init"):
            item = None
        else:
            try:
                _, info = read_checkpoint(Path(entry).expanduser())
            except GradleakError as error:
                raise GradleakError(f"{where}: grid.weights: {error}") from None
            item = _Weights(Path(info.path).name, info.path, info.sha256, info.architecture, info.channels,
                            info.image_size)
        if item not in out:
            out.append(item)
    return out


def _run_settings(table: Mapping[str, Any], name: str, defaults: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = {}
    for key, value in table.items():
        out[key] = _typed(value, defaults[key], f"{name}.{key}", where, optional_int=key == "num_classes")
    if "iterations" in out and out["iterations"] < 1:
        raise GradleakError(f"{where}: {name}.iterations must be at least 1 (got {out['iterations']})")
    return out


UTILITY_KEYS = (
    "dataset", "model", "defenses", "epochs", "batch_size", "lr", "momentum", "seeds", "train_size", "test_size",
    "data_root", "download", "device",
)


def _expand_utility(
    table: dict[str, Any], grid_defenses: list[list[str]], fixed: Mapping[str, Any], where: str, seen: set[str]
) -> list[PlannedRun]:
    from gradleak.utility import UtilityConfig, check_utility_config, utility_identity

    _unknown(list(table), UTILITY_KEYS, "[utility]", where)
    defaults = _dataclass_defaults(UtilityConfig)
    seeds = _ints(table.pop("seeds", [defaults["seed"]]), "utility.seeds", where, low=0)
    defenses = _defense_entries(table.pop("defenses"), "utility.defenses", where) if "defenses" in table else grid_defenses
    if [] not in defenses:
        defenses = [[], *defenses]  # the undefended baseline is always trained
    base: dict[str, Any] = dict(defaults)
    for key in ("device", "data_root", "download"):
        if key in fixed:
            base[key] = fixed[key]
    for key, value in table.items():
        if key == "model":
            if not isinstance(value, str) or not value.strip():
                raise GradleakError(f"{where}: utility.model must be a model name or \"default\" (got {value!r})")
            base[key] = None if value.strip() == "default" else value.strip()
        else:
            base[key] = _typed(value, defaults[key], f"utility.{key}", where)
    runs = []
    for specs, seed in itertools.product(defenses, seeds):
        config = {**base, "defenses": list(specs), "seed": seed}
        check_utility_config(UtilityConfig(**config), where=f"{where}: [utility]")
        run_id = run_id_for("utility", utility_identity(config))
        if run_id in seen:
            continue
        seen.add(run_id)
        axes = {"dataset": config["dataset"], "model": config["model"] or "default", "defense": defense_label(specs), "seed": seed}
        label = f"utility/{config['dataset']}/{config['model'] or 'default'}/{defense_label(specs)}/s{seed}"
        runs.append(PlannedRun(run_id=run_id, kind="utility", label=label, config=config, axes=axes))
    return runs

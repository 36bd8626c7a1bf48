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

import sys
from pathlib import Path
from typing import Any

from gradleak.errors import GradleakError
from gradleak.sweep.axes import DEFAULT_SUCCESS_PSNR
from gradleak.sweep.expand import DEFAULT_MAX_RUNS, expand, scenario_label, valid_run_keys
from gradleak.sweep.plan import PlannedRun, SweepPlan
from gradleak.sweep.run_ids import SCHEMA_VERSION, attack_identity, run_id_for
from gradleak.sweep.values import canonical_defenses, defense_label, is_plain_name

__all__ = [
    "DEFAULT_MAX_RUNS", "DEFAULT_SUCCESS_PSNR", "PlannedRun", "SCHEMA_VERSION", "SweepPlan", "attack_identity",
    "canonical_defenses", "defense_label", "expand", "is_plain_name", "load_plan", "parse_plan", "run_id_for",
    "scenario_label", "valid_run_keys",
]


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


"""One gradient-leakage experiment: private data → client update → attack → scores and pictures.

The runner is the only place that holds both the private data and the attack's output; the attack
itself receives the model and the :class:`~gradleak.types.SharedUpdate` alone.
"""

from __future__ import annotations

import dataclasses
import math

import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradleak.version import __version__
from gradleak.errors import GradleakError
from gradleak.io.staging import check_output_folder, staged_folder
from gradleak.runtime import resolve_device, seed_everything
from gradleak.types import AttackResult, SharedUpdate, StepReport


@dataclass
class RunConfig:
    """Every setting of one run; written to ``config.json`` as resolved."""

    dataset: str = "cifar100"
    indices: list[int] = field(default_factory=lambda: [25])
    images: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    num_classes: int | None = None
    data_root: str = "./data"
    split: str = "train"
    download: bool = True
    iterations: int = 300
    seed: int = 1234
    model: str | None = None
    weights: str | None = None  # checkpoint to load into the model (None: fresh initialisation)
    weights_sha256: str | None = None  # expected checksum of ``weights`` (None: not checked, only recorded)
    device: str = "auto"
    threads: int | None = None  # torch CPU threads; None: 1 for the LeNets (measured no faster with 2), else all
    attack: str = "dlg"
    tv_weight: float | None = None  # None: the attack's own default (0 for dlg, 1e-4 for ig)
    clamp: bool | None = None  # None: the attack's own default (off for dlg, on for ig)
    restarts: int | None = None  # None: the attack's own default (ig/auto: 4 at once; dlg/idlg: up to 8 tries); analytic has none
    early_stop: int | None = None  # None: the attack's own default (dlg/idlg: stop after 30 iterations without improvement)
    scenario: str = "fedsgd"
    local_steps: int = 1
    local_lr: float = 1e-4
    clients: int | None = None  # secagg/imprint: clients whose updates are aggregated (None: 2 for secagg, 1 for imprint)
    bins: int | None = None  # imprint: bins of the malicious server's block (None: DEFAULT_BINS)
    tile_bundled: bool = False  # test indices >= 20 are flipped/shifted copies of the bundled 0..19
    defenses: list[str] = field(default_factory=list)
    noise_source: str | None = None  # None: the attack's own default (map/auto: "auto")
    save_history: bool = False
    save_final: bool = False
    save_model: bool = False  # write model.pt: the state dict of the model the client received
    update: str | None = None  # attack this captured update file (no private data, no simulated client)
    reference: list[str] = field(default_factory=list)  # with --update: images to score the reconstructions against
    out: str | None = None
    overwrite: bool = False
    quiet: bool = False


@dataclass
class RunOutcome:
    out_dir: Path
    metrics: dict[str, Any]
    result: AttackResult


@dataclass
class Prepared:
    """A validated experiment, ready to attack. Building it writes nothing."""

    config: RunConfig
    device: torch.device
    model: torch.nn.Module
    images: torch.Tensor | None  # None: a captured update without --reference (nothing to score)
    labels: torch.Tensor | None
    update: SharedUpdate
    attack: Any
    num_classes: int
    model_name: str
    out_dir: Path
    #: the client that holds each private image (secure aggregation); None for one client
    client_of: list[int] | None = None
    checkpoint: Any = None  # gradleak.models.checkpoint.CheckpointInfo when --weights was given


def prepare(config: RunConfig) -> Prepared:
    """Validate every setting, load the private data, build the model and the client's update.

    All user errors surface here, before anything is written or any long work starts.
    """
    from gradleak.attacks import ATTACKS
    from gradleak.data import get_spec, load_image_files, load_samples, num_classes
    from gradleak.defenses import parse_defenses
    from gradleak.models import check_compatible, default_model, model_skeleton
    from gradleak.models.checkpoint import check_state_fits, load_into
    from gradleak.models.external import is_external, load_factory
    from gradleak.scenarios import SCENARIOS

    if config.iterations < 1:
        raise GradleakError(f"--iters must be at least 1 (got {config.iterations}): try --iters 300")
    if config.tv_weight is not None and config.tv_weight < 0:
        raise GradleakError(f"--tv-weight must be >= 0 (got {config.tv_weight})")
    if config.update:
        return prepare_captured(config)
    if config.reference:
        raise GradleakError("--reference scores the attack on a captured update: give --update FILE (or drop --reference)")
    spec = get_spec(config.dataset)
    state, checkpoint = read_weights(config)
    model_name = config.model or (checkpoint and checkpoint.architecture) or default_model(spec.channels, spec.image_size)
    if checkpoint is not None:  # before check_compatible: the checkpoint's own shape is the better message
        check_weights(checkpoint, model_name=model_name, spec=spec, classes=None)
    if not is_external(model_name):
        check_compatible(model_name, channels=spec.channels, image_size=spec.image_size, dataset=spec.name)
    elif not config.update:
        load_factory(model_name)  # a bad model file fails here, before any data is read
    check_scenario_settings(config)
    scenario_cls = SCENARIOS.get(config.scenario)
    if config.attack == "auto" and scenario_cls.default_attack:
        # e.g. a malicious server reads its own imprint block: that is the attack that applies.
        config = dataclasses.replace(config, attack=scenario_cls.default_attack)
    attack_factory = ATTACKS.get(config.attack)
    if config.restarts is not None and config.restarts < 1:
        raise GradleakError(f"--restarts must be at least 1 (got {config.restarts})")
    attack_overrides(config, attack_factory)  # an unsupported setting is refused before any data is read
    defenses = parse_defenses(config.defenses)
    device = resolve_device(config.device)
    out_dir = resolve_out_dir(config, model_name)

    if config.tile_bundled and config.images:
        raise GradleakError("--tile-bundled tiles the bundled test images: drop it with --image")
    if config.tile_bundled:
        from gradleak.data.public import load_tiled

        if config.split != "test":
            raise GradleakError(f"--tile-bundled uses the bundled test images: add --split test (got --split {config.split})")
        images, dataset_labels = load_tiled(spec.name, config.indices)
        classes = config.num_classes or (checkpoint and checkpoint.num_classes) or spec.num_classes
        if config.labels and len(config.labels) != len(config.indices):
            raise GradleakError(
                f"{len(config.indices)} index(es) but {len(config.labels)} --label value(s): give one label per image or none"
            )
        labels_list = list(config.labels) if config.labels else [int(x) for x in dataset_labels]
    elif config.images:
        classes = config.num_classes or (checkpoint and checkpoint.num_classes) or spec.num_classes
        labels_list = list(config.labels) if config.labels else [0] * len(config.images)
        if len(labels_list) != len(config.images):
            raise GradleakError(
                f"{len(config.images)} --image path(s) but {len(labels_list)} --label value(s): give one label per image"
            )
        images = load_image_files(config.images, spec)
    else:
        if not config.indices:
            raise GradleakError("no sample chosen: give --index N, --indices N M … or --image PATH")
        if config.labels and len(config.labels) != len(config.indices):
            raise GradleakError(
                f"{len(config.indices)} index(es) but {len(config.labels)} --label value(s): give one label per image or none"
            )
        images, dataset_labels = load_samples(
            spec.name, config.indices, split=config.split, root=config.data_root, download=config.download
        )
        classes = config.num_classes or (checkpoint and checkpoint.num_classes) or num_classes(
            spec.name, root=config.data_root, split=config.split, download=config.download
        )
        labels_list = list(config.labels) if config.labels else [int(x) for x in dataset_labels]
        if checkpoint is not None and not config.labels:
            check_checkpoint_labels(checkpoint, labels_list, config.indices, classes, spec.name)
    if classes < 2:
        raise GradleakError(f"--num-classes must be at least 2 (got {classes})")
    for label in labels_list:
        if not 0 <= label < classes:
            raise GradleakError(f"--label {label} is out of range: with {classes} classes use 0..{classes - 1}")
    labels = torch.tensor(labels_list, dtype=torch.long)

    if config.threads is not None and config.threads < 1:
        raise GradleakError(f"--threads must be at least 1 (got {config.threads})")
    torch.set_num_threads(config.threads or (1 if model_name.startswith("lenet") else os.cpu_count() or 1))
    seed_everything(config.seed)
    if checkpoint is not None:  # names and shapes on a meta-device skeleton: nothing allocated yet
        check_weights(checkpoint, model_name=model_name, spec=spec, classes=classes)
        if not is_external(model_name):
            skeleton = model_skeleton(model_name, channels=spec.channels, image_size=spec.image_size, num_classes=classes)
            check_state_fits(skeleton, state, checkpoint, model_name=model_name)
    model = build_run_model(model_name, channels=spec.channels, image_size=spec.image_size, num_classes=classes)
    if checkpoint is not None:
        load_into(model, state, checkpoint, model_name=model_name)
    model = model.to(device)
    generator = torch.Generator().manual_seed(config.seed + 1)  # defense noise: its own stream
    scenario = scenario_cls.from_run(
        asdict(config), defenses=defenses, generator=generator,
        context={"dataset": spec.name, "image_shape": tuple(images.shape[1:]), "device": device},
    )
    client_of = scenario.client_batches(images.shape[0]) if hasattr(scenario, "client_batches") else None
    if hasattr(scenario, "server_model"):  # a malicious server modifies the model it sends
        model = scenario.server_model(model)
    update = scenario.share(model, images.to(device), labels.to(device))
    attack = attack_factory(iterations=config.iterations, **attack_overrides(config, attack_factory))
    attack.check(update, model)
    return Prepared(
        config=config,
        device=device,
        model=model,
        images=images,
        labels=labels,
        update=update,
        attack=attack,
        num_classes=classes,
        model_name=model_name,
        out_dir=out_dir,
        client_of=client_of if update.clients > 1 else None,
        checkpoint=checkpoint,
    )


def prepare_captured(config: RunConfig) -> Prepared:
    """``--update FILE``: the server's model and the captured update; reference images if given."""
    from gradleak.attacks import ATTACKS
    from gradleak.captured import captured_inputs
    from gradleak.io.update_file import check_update_fits
    from gradleak.models.checkpoint import load_into

    if config.tv_weight is not None and config.tv_weight < 0:
        raise GradleakError(f"--tv-weight must be >= 0 (got {config.tv_weight})")
    update, spec, images, labels = captured_inputs(config)
    state, checkpoint = read_weights(config)
    attack_factory = ATTACKS.get(config.attack)
    device = resolve_device(config.device)
    out_dir = resolve_out_dir(config, config.model)  # type: ignore[arg-type]
    seed_everything(config.seed)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    model = build_run_model(config.model, channels=spec.channels, image_size=spec.image_size,  # type: ignore[arg-type]
                            num_classes=update.num_classes)
    if checkpoint is not None:
        check_weights(checkpoint, model_name=config.model, spec=spec, classes=update.num_classes)  # type: ignore[arg-type]
        load_into(model, state, checkpoint, model_name=config.model)  # type: ignore[arg-type]
    check_update_fits(update, model, source=f"--update {config.update}")
    model = model.to(device)
    update = update.to(device)
    attack = attack_factory(iterations=config.iterations, **attack_overrides(config, attack_factory))
    attack.check(update, model)
    return Prepared(
        config=config, device=device, model=model, images=images, labels=labels, update=update, attack=attack,
        num_classes=update.num_classes, model_name=config.model, out_dir=out_dir, checkpoint=checkpoint,  # type: ignore[arg-type]
    )


def attack_overrides(config: RunConfig, attack_factory: Any) -> dict[str, Any]:
    """Only what the user set overrides the attack's own defaults (each attack owns its config);
    a setting the attack does not declare is refused in one line naming the attacks that take it."""
    overrides = {name: getattr(config, name) for name in ATTACK_SETTINGS if getattr(config, name) is not None}
    for name in overrides:
        refuse_unsupported_setting(attack_factory, name, attack=config.attack)
    return overrides


def check_scenario_settings(config: RunConfig) -> None:
    """Refuse a scenario setting the chosen scenario does not read, before any data is loaded
    (which scenarios read which setting is what they declare)."""
    from gradleak.scenarios import SCENARIOS, scenario_settings

    scenario = SCENARIOS.get(config.scenario)
    defaults = RunConfig()
    for setting, readers in scenario_settings().items():
        if config.scenario not in readers and getattr(config, setting) != getattr(defaults, setting):
            flag = "--" + setting.replace("_", "-")
            raise GradleakError(
                f"{flag} applies to --scenario {' or '.join(readers)}, not {config.scenario}: "
                f"drop it or use --scenario {readers[0]}"
            )
    if hasattr(scenario, "validate"):
        scenario.validate(asdict(config))


def read_weights(config: RunConfig) -> tuple[dict[str, torch.Tensor] | None, Any]:
    """(state dict, CheckpointInfo) of ``config.weights``, or (None, None) without it. Read safely:
    safetensors or ``torch.load(weights_only=True)``, never unpickling code."""
    if not config.weights:
        if config.weights_sha256:
            raise GradleakError("--weights-sha256 checks a checkpoint: give it with --weights PATH")
        return None, None
    from gradleak.models.checkpoint import read_checkpoint

    return read_checkpoint(config.weights, expected_sha256=config.weights_sha256)


def check_checkpoint_labels(checkpoint: Any, labels: list[int], indices: list[int], classes: int, dataset: str) -> None:
    """A checkpoint fixes the class count: refuse dataset labels it cannot represent, with the ways out."""
    bad = [(i, label) for i, label in zip(indices, labels) if not 0 <= label < classes]
    if bad:
        index, label = bad[0]
        raise GradleakError(
            f"{dataset} image {index} has label {label} but --weights {Path(checkpoint.path).name} has "
            f"{classes} classes (0..{classes - 1}): attack a dataset with {classes} classes (e.g. cifar10 "
            f"or mnist for a digits checkpoint), give --label in 0..{classes - 1}, or train the checkpoint on {dataset}"
        )


def check_weights(checkpoint: Any, *, model_name: str, spec: Any, classes: int | None) -> None:
    """Check what the checkpoint says it is against the run: model, input shape, classes (when known)."""
    from gradleak.models import MODELS
    from gradleak.models.checkpoint import check_fits
    from gradleak.models.external import is_external

    check_fits(checkpoint, model_name=model_name, channels=spec.channels, image_size=spec.image_size,
               num_classes=classes, dataset=spec.name,
               size_matters=is_external(model_name) or MODELS.get(model_name).image_size is not None)


def build_run_model(model_name: str, *, channels: int, image_size: int, num_classes: int) -> torch.nn.Module:
    """A registered model by name, or the user's ``FILE.py:factory`` / ``module:factory``."""
    from gradleak.models import build_model
    from gradleak.models.external import build_external, is_external

    if is_external(model_name):
        return build_external(model_name, num_classes=num_classes, input_shape=(channels, image_size, image_size))
    return build_model(model_name, channels=channels, image_size=image_size, num_classes=num_classes)


def _has_setting(attack_factory: Any, name: str) -> bool:
    """Whether a (dataclass) attack has the setting ``name`` that a flag would override."""
    return name in {f.name for f in dataclasses.fields(attack_factory)}


# Run settings an attack may take, with their flags: each attack declares the ones it takes as
# dataclass fields, and a flag it has no field for is refused in one line (never a TypeError).
ATTACK_SETTINGS = {"tv_weight": "--tv-weight", "clamp": "--clamp", "restarts": "--restarts", "noise_source": "--noise-source",
                   "early_stop": "--early-stop"}


def refuse_unsupported_setting(attack_factory: Any, name: str, *, attack: str) -> None:
    """One line naming the attacks that take setting ``name``, when ``attack`` does not."""
    from gradleak.attacks import ATTACKS

    if _has_setting(attack_factory, name):
        return
    takers = [n for n in ATTACKS.names() if _has_setting(ATTACKS.get(n), name)]
    listed = f"{', '.join(takers[:-1])} and {takers[-1]}" if len(takers) > 1 else "".join(takers)
    raise GradleakError(
        f"{ATTACK_SETTINGS[name]} applies to the {listed} attacks, not {attack}: drop it"
        + (f" or use --attack {takers[0]}" if takers else "")
    )


def model_label(model_name: str) -> str:
    """A file-name-safe label for a model: ``lenet``, or ``cnn.build`` for ``models/cnn.py:build``.

    Example:
        >>> model_label("models/cnn.py:build"), model_label("resnet18")
        ('cnn.build', 'resnet18')
    """
    import re

    if ":" in model_name:
        target, _, factory = model_name.rpartition(":")
        model_name = f"{Path(target).stem if target.endswith('.py') else target}.{factory}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", model_name)


def resolve_out_dir(config: RunConfig, model_name: str) -> Path:
    """The output folder; refuses a non-empty one unless ``overwrite`` (checked before any work)."""
    if config.out:
        out = Path(config.out)
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        source = "captured" if config.update else config.dataset
        label = model_label(model_name)
        out = Path("runs") / f"{stamp}-{source}-{label}"
        suffix = 1
        while out.exists():
            suffix += 1
            out = Path("runs") / f"{stamp}-{source}-{label}-{suffix}"
    return check_output_folder(out, overwrite=config.overwrite)


class _Progress:
    """Observer: records loss and PSNR per iteration and drives the progress bar.

    It is the runner's (it holds the ground truth to compute PSNR); the attack only calls it.
    """

    def __init__(self, targets: torch.Tensor | None, total: int, quiet: bool) -> None:
        from gradleak.metrics import match_reconstructions, mean_psnr

        self._match = match_reconstructions
        self._psnr = mean_psnr  # the definition of the reported PSNR: mean over the batch's images
        self.targets = targets.cpu() if targets is not None else None  # None: nothing to score against
        # One point per report. An attack made of phases (auto: analytic, then IG, then L-BFGS)
        # numbers each phase from 1; ``iterations`` counts on across them (what the bar shows).
        self.iterations: list[int] = []
        self.losses: list[float] = []
        self.psnrs: list[float] = []
        self.objectives: list[str] = []
        self._offset = 0
        self._last_reported = 0
        self.events: list[tuple[int, str]] = []
        self.bar = None
        if not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="attack", unit="it", dynamic_ncols=True, file=sys.stderr)

    def __call__(self, report: StepReport) -> None:
        value = float("nan")
        if self.targets is not None:
            images = report.images.detach().cpu().clamp(0, 1)
            order = self._match(images, self.targets) if self.targets.shape[0] > 1 else [0]
            value = self._psnr(images[order], self.targets)
        if report.iteration <= self._last_reported:  # a new phase numbered from 1 again
            self._offset = self.iterations[-1]
        self._last_reported = report.iteration
        iteration = self._offset + report.iteration
        self.iterations.append(iteration)
        self.losses.append(report.loss)
        self.psnrs.append(value)
        self.objectives.append(report.objective)
        if report.event is not None:
            # e.g. DLG's stall guard starting again: printed above the bar (the summary repeats it)
            self.events.append((iteration, report.event))
            if self.bar is not None:
                self.bar.write(report.event, file=sys.stderr)
        if self.bar is not None:
            self.bar.total = max(self.bar.total or 0, iteration)  # an attack whose own budget is larger
            self.bar.n = iteration
            self.bar.set_postfix(loss=f"{report.loss:.3g}", **({"psnr": f"{value:.2f}dB"} if self.targets is not None else {}), refresh=False)
            self.bar.refresh()

    def close(self, *, finished: bool = True, iterations: int | None = None) -> None:
        """End the bar. A finished attack ends it at 100% of the ``iterations`` it ran (the count
        ``metrics.json`` reports); an interrupted or failed one leaves it where it stopped."""
        if self.bar is not None:
            if finished:
                self.bar.n = self.bar.total = iterations if iterations is not None else self.bar.n
                self.bar.refresh()
            self.bar.close()

    def finish(self, iterations: int, final_psnr: float) -> None:
        """Close the curve at the attack's own iteration count with its returned result's PSNR
        (reports may come every few iterations, and a phase may run without reporting)."""
        if not self.iterations or self.iterations[-1] < iterations:
            self.iterations.append(iterations)
            self.losses.append(math.nan)  # no objective value for the returned result: the PSNR only
            self.psnrs.append(final_psnr)
            self.objectives.append(self.objectives[-1] if self.objectives else "")


def execute(prepared: Prepared) -> RunOutcome:
    """Run the attack, score it against the private data, and write every output file."""
    from gradleak.metrics import score_batch

    config = prepared.config
    progress = _Progress(prepared.images, config.iterations, config.quiet)
    try:
        result = prepared.attack.run(prepared.model, prepared.update, observer=progress)
    except BaseException:  # Ctrl-C or a failure: the bar must not claim 100% before "interrupted"
        progress.close(finished=False)
        raise
    progress.close(iterations=result.iterations)
    if prepared.images is None:
        return write_unscored(prepared, result, progress)
    score = score_batch(
        result.images,
        prepared.images,
        true_labels=prepared.labels,
        recovered_labels=result.labels,
        indices=None if config.images or config.update else list(config.indices),
    )
    metrics: dict[str, Any] = {
        "dataset": "captured" if config.update else config.dataset,
        **({"update_file": config.update} if config.update else {}),
        "model": prepared.model_name,
        "attack": prepared.attack.name,
        "scenario": config.scenario,
        "defenses": list(prepared.update.defenses),
        "batch_size": int(prepared.images.shape[0]),
        "mse": score.mse,
        "psnr": score.psnr,
        **({"psnr_of_batch_mse": score.psnr_of_mse} if prepared.images.shape[0] > 1 else {}),
        "ssim": score.ssim,
        **({"st_lpips": score.st_lpips} if score.st_lpips is not None else {}),
        **({"lpips": score.lpips} if score.lpips is not None else {}),
        "label_accuracy": score.label_accuracy,
        "iterations": result.iterations,
        "seconds": round(result.seconds, 3),
        "stop_reason": result.stop_reason,
        "tries": result.restarts,
        **({"attempts": [asdict(a) for a in result.attempts]} if result.attempts else {}),
        "final_loss": result.losses[-1] if result.losses else None,
        "per_image": [{k: v for k, v in asdict(s).items() if v is not None} for s in score.per_image],
        **client_metrics(prepared, score),
        **{k: v for k, v in result.extras.items()},
        **dp_privacy(prepared),
        **(prepared.checkpoint.as_record() if prepared.checkpoint is not None else {}),
        "identifiability": identifiability_record(prepared),
    }
    if prepared.client_of is not None:
        for entry, owner in zip(metrics["per_image"], prepared.client_of):
            entry["client"] = owner
    write_outputs(prepared, result, score, metrics, progress)
    return RunOutcome(out_dir=prepared.out_dir, metrics=metrics, result=result)


def identifiability_record(prepared: Prepared) -> dict[str, Any]:
    """What this update could leak, counted from the model alone (gradleak.attacks.identifiability)."""
    from gradleak.attacks.identifiability import identifiability

    update = prepared.update
    return identifiability(prepared.model, update.input_shape, update.batch_size, sent=update.parameter_names).as_record()


def write_unscored(prepared: Prepared, result: AttackResult, progress: _Progress) -> RunOutcome:
    """A captured update without reference images: the reconstructions and what the attack
    itself knows (no ground-truth scores exist)."""
    from gradleak.io.files import write_json, write_text
    from gradleak.figures import save_curves, save_image, tile

    config = prepared.config
    metrics: dict[str, Any] = {
        "dataset": "captured",
        "update_file": config.update,
        "model": prepared.model_name,
        "attack": prepared.attack.name,
        "kind": prepared.update.kind,
        "defenses": list(prepared.update.defenses),
        "batch_size": int(prepared.update.batch_size),
        "scored": False,
        "recovered_labels": [int(x) for x in result.labels],
        "iterations": result.iterations,
        "seconds": round(result.seconds, 3),
        "stop_reason": result.stop_reason,
        "final_loss": result.losses[-1] if result.losses else None,
        **{k: v for k, v in result.extras.items()},
        "identifiability": identifiability_record(prepared),
    }
    with staged_folder(prepared.out_dir) as stage:
        batch = result.images.shape[0]
        for i in range(batch):
            save_image(stage / f"recon{'' if batch == 1 else f'_{i}'}.png", result.images[i])
        save_image(stage / "reconstructions.png", tile(result.images.detach().cpu()))
        if result.iterations > 1 and progress.iterations:  # one closed-form step: nothing to plot
            progress.finish(result.iterations, math.nan)
            save_curves(stage / "curves.png", iterations=progress.iterations, losses=progress.losses,
                        objectives=progress.objectives)
        write_text(stage / "metrics.txt", "\n".join([
            f"update={config.update}", f"model={prepared.model_name}", f"iterations={result.iterations}",
            "no reference images: not scored (pass --reference IMAGES)"]) + "\n")
        write_json(stage / "metrics.json", metrics)
        write_json(stage / "config.json", resolved_config(prepared))
    return RunOutcome(out_dir=prepared.out_dir, metrics=metrics, result=result)


def client_metrics(prepared: Prepared, score: Any, *, success_psnr: float = 30.0) -> dict[str, Any]:
    """Under secure aggregation: which client each scored image (and so its matched reconstruction)
    came from, and per client the mean PSNR and the share of images at ``success_psnr`` or more.

    The runner knows the mapping; the attack saw one aggregated batch."""
    if prepared.client_of is None:
        return {}
    owners = prepared.client_of
    per_client = []
    for k in sorted(set(owners)):
        values = [s.psnr for s, owner in zip(score.per_image, owners) if owner == k]
        per_client.append({
            "client": k,
            "images": len(values),
            "psnr": float(np.mean(values)),
            "recovered": sum(1 for v in values if v >= success_psnr) / len(values),
        })
    return {"clients": len(per_client), "per_client": per_client}


def dp_privacy(prepared: Prepared) -> dict[str, float]:
    """With DP-SGD: ε of this one shared gradient at the configured δ (sampling rate = batch / dataset
    size when the dataset's size is known, else 1, the worst case)."""
    from gradleak.defenses import parse_defenses

    dp = next((d for d in parse_defenses(prepared.config.defenses) if hasattr(d, "epsilon")), None)
    if dp is None:
        return {}
    rate = 1.0
    if not prepared.config.images:
        from gradleak.data import dataset_size

        try:
            size = dataset_size(prepared.config.dataset, split=prepared.config.split,
                                root=prepared.config.data_root, download=False)
            rate = min(1.0, prepared.images.shape[0] / size)
        except GradleakError:
            pass
    return {"dp_epsilon": dp.epsilon(steps=1, sample_rate=rate), "dp_delta": dp.delta, "dp_sample_rate": rate}


def write_outputs(prepared: Prepared, result: AttackResult, score: Any, metrics: dict[str, Any], progress: _Progress) -> None:
    """Write everything into a staging folder, then move it into place (no half-written run)."""
    with staged_folder(prepared.out_dir) as stage:
        _write_stage(stage, prepared, result, score, metrics, progress)


def _write_stage(stage: Path, prepared: Prepared, result: AttackResult, score: Any, metrics: dict[str, Any], progress: _Progress) -> None:
    from gradleak.io.files import write_json, write_text
    from gradleak.figures import save_comparison, save_curves, save_history, save_image

    config = prepared.config
    matched = result.images[score.order]
    batch = prepared.images.shape[0]
    if config.save_final:
        for i in range(batch):
            suffix = "" if batch == 1 else f"_{i}"
            save_image(stage / f"recon{suffix}.png", matched[i])
            save_image(stage / f"target{suffix}.png", prepared.images[i])
    one_step = result.iterations <= 1  # solved in closed form (or --iters 1): nothing happened over iterations
    how = "finished in one step (solved in closed form)" if "solved" in result.stop_reason else "ran one step"
    if config.save_history and result.snapshots and not one_step:
        save_history(stage / "history.png", [*result.snapshots, (result.iterations, result.images)])
    elif config.save_history and not config.quiet:
        print(f"note: --save-history does not apply: attack {prepared.attack.name!r} "
              + (how if one_step else "took no snapshots")
              + ", so there is no history.png (use --attack dlg or ig for an iteration history)")
    captions = [f"{s.psnr:.1f} dB" for s in score.per_image]
    save_comparison(stage / "comparison.png", prepared.images, matched, captions)
    if one_step:
        if not config.quiet:
            print(f"note: no curves.png: attack {prepared.attack.name!r} {how}: nothing to plot over "
                  "iterations (comparison.png shows the result)")
    else:
        progress.finish(result.iterations, score.psnr)
        restarts = [(a.start, a_prev.reason) for a_prev, a in zip(result.attempts, result.attempts[1:])]
        save_curves(stage / "curves.png", iterations=progress.iterations, losses=progress.losses,
                    psnrs=progress.psnrs, objectives=progress.objectives, restarts=restarts,
                    psnr_label="PSNR" if batch == 1 else "PSNR (mean of the per-image PSNRs)")
    write_text(stage / "metrics.txt", classic_metrics_text(config, prepared.model_name, metrics))
    write_json(stage / "metrics.json", metrics)
    write_json(stage / "config.json", resolved_config(prepared))
    if config.save_model:
        # Plain tensors only: loadable with torch.load(weights_only=True) (gradleak inspect-model).
        state = {k: v.detach().cpu().contiguous() for k, v in prepared.model.state_dict().items()}
        torch.save(state, stage / "model.pt")


def classic_metrics_text(config: RunConfig, model_name: str, metrics: dict[str, Any]) -> str:
    lines = [
        f"dataset={config.dataset}",
        f"model={model_name}",
        f"iterations={metrics['iterations']}",
        f"MSE={metrics['mse']:.6f}",
        f"PSNR={metrics['psnr']:.2f} dB",
    ]
    if "psnr_of_batch_mse" in metrics:  # a batch: say which PSNR is which
        lines += [
            "PSNR above: mean of the per-image PSNRs; MSE above: the batch's (mean of per-image MSEs)",
            f"PSNR of the batch MSE={metrics['psnr_of_batch_mse']:.2f} dB",
        ]
    return "\n".join(lines) + "\n"


def resolved_config(prepared: Prepared) -> dict[str, Any]:
    config = asdict(prepared.config)
    config.update(
        model=prepared.model_name,
        num_classes=prepared.num_classes,
        device=str(prepared.device),
        labels=[int(x) for x in prepared.labels] if prepared.labels is not None else None,
        attack_settings=asdict(prepared.attack) if hasattr(prepared.attack, "__dataclass_fields__") else {},
        out=str(prepared.out_dir),
        **(prepared.checkpoint.as_record() if prepared.checkpoint is not None else {}),
        gradleak_version=__version__,
        torch_version=torch.__version__,
        python_version=platform.python_version(),
        torch_threads=torch.get_num_threads(),
        created=datetime.now().isoformat(timespec="seconds"),
    )
    return config


def run_experiment(config: RunConfig) -> RunOutcome:
    """Validate, attack, score and write outputs. Raises GradleakError on bad input."""
    return execute(prepare(config))

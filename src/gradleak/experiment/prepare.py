"""Validate a run and build everything it attacks (private data, model, the client's update).
Building it writes nothing: every user error surfaces here, before any long work."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
import os
from datetime import datetime
from pathlib import Path

import torch

from gradleak.errors import GradleakError
from gradleak.experiment.config import Prepared, RunConfig
from gradleak.experiment.model import build_run_model, check_weights, read_weights
from gradleak.experiment.private_data import load_private_batch
from gradleak.experiment.settings import attack_overrides, check_scenario_settings
from gradleak.io.staging import check_output_folder
from gradleak.runtime import resolve_device, seed_everything


def prepare(config: RunConfig) -> Prepared:
    """Validate every setting, load the private data, build the model and the client's update.

    All user errors surface here, before anything is written or any long work starts.
    """
    from gradleak.attacks import ATTACKS
    from gradleak.data import get_spec
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

    images, labels, classes = load_private_batch(config, spec, checkpoint)

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


"""Audit client updates a federated server received: attack each, score it when possible, write it out.

Framework-free: a framework adapter (e.g. :mod:`gradleak.integrations.flower`) turns what its
server received into :class:`ReceivedUpdate` records and hands them to a :class:`LeakageAuditor`.
The server knows only what it sent (its weights and its training config) and what came back
(the client's weights and the example count a FedAvg client reports anyway); the weight change
and that config are the whole of what the attack sees.

Example (a client that took one SGD step on one image):
    >>> import tempfile, torch, gradleak
    >>> from gradleak.models import build_model
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = build_model("lenet", channels=3, image_size=32, num_classes=10)
    >>> image, label = torch.rand(1, 3, 32, 32), torch.tensor([3])
    >>> sent = gradleak.client_update(model, image, label, scenario="fedavg", local_steps=1, local_lr=0.1)
    >>> before = {n: p.detach().clone() for n, p in model.named_parameters()}
    >>> after = {n: before[n] + d for (n, _), d in zip(model.named_parameters(), sent.tensors)}
    >>> received = ReceivedUpdate(1, "7", before, after, num_examples=1, plan=TrainingPlan(0.1, 1))
    >>> auditor = LeakageAuditor(model, tempfile.mkdtemp() + "/audit", input_shape=(3, 32, 32),
    ...                          reference=lambda r, c: (image, label))
    >>> row = auditor.audit(received)
    >>> row["status"], row["psnr"] > 30
    ('ok', True)
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradleak.api import reconstruct, score
from gradleak.errors import GradleakError
from gradleak.integrations.audit_report import write_client_page, write_index
from gradleak.types import SharedUpdate

log = logging.getLogger("gradleak.audit")

#: ``reference(server_round, client)`` -> (images in [0, 1] (B, C, H, W), labels (B,)) or None.
Reference = Callable[[int, str], "tuple[torch.Tensor, torch.Tensor] | None"]


@dataclass(frozen=True)
class TrainingPlan:
    """What the server's config told the client to do (so the server knows it without asking).

    Attributes:
        local_lr: the client's SGD learning rate.
        local_steps: local optimisation steps behind the weight change.
        local_batch_size: mini-batch size of each step (``None``: all its examples each step).
    """

    local_lr: float
    local_steps: int
    local_batch_size: int | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.local_lr, (int, float)) and math.isfinite(self.local_lr) and self.local_lr > 0):
            raise GradleakError(f"the server's learning rate must be a positive number (got {self.local_lr!r})")
        if not (isinstance(self.local_steps, int) and self.local_steps >= 1):
            raise GradleakError(f"the server's local step count must be a whole number >= 1 (got {self.local_steps!r})")
        if self.local_batch_size is not None and not (
            isinstance(self.local_batch_size, int) and self.local_batch_size >= 1
        ):
            raise GradleakError(f"the server's batch size must be a whole number >= 1 (got {self.local_batch_size!r})")


@dataclass(frozen=True)
class ReceivedUpdate:
    """One client's reply in one round, as the server holds it.

    Attributes:
        server_round: the round, from 1.
        client: the client's id (a Flower node id, as text).
        before: the weights the server sent (name -> tensor).
        after: the weights the client sent back (name -> tensor).
        num_examples: the example count the client reported (FedAvg weights by it).
        plan: the training the server's config asked for.
    """

    server_round: int
    client: str
    before: Mapping[str, torch.Tensor]
    after: Mapping[str, torch.Tensor]
    num_examples: int
    plan: TrainingPlan


def infer_num_classes(model: nn.Module) -> int:
    """The output size of the model's last Linear layer."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise GradleakError("the model has no Linear classifier layer: pass num_classes=… to the auditor")
    return int(linears[-1].out_features)


def shared_update(
    model: nn.Module,
    received: ReceivedUpdate,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    defenses: Sequence[str] = (),
) -> SharedUpdate:
    """The weight change a client sent, as the :class:`SharedUpdate` an attack takes.

    One full-batch local step is handed over as the gradient it equals (``-change / lr``), so that
    gradient attacks and noise models for defended gradients apply; more steps or mini-batches
    stay a ``weight_delta`` with the step count, learning rate and batch size.

    Raises:
        GradleakError: one line when the client sent something other than the model's
            parameters (missing or unexpected names, other shapes, non-finite values).
    """
    who = f"client {received.client} in round {received.server_round}"
    names = [name for name, _ in model.named_parameters()]
    missing = [n for n in names if n not in received.after]
    if missing:
        raise GradleakError(
            f"{who} sent no weights for {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}: "
            "its model is not the server's model (check the client app builds the same architecture)"
        )
    tensors = []
    for name, param in model.named_parameters():
        sent, sent_before = received.after[name], received.before[name]
        if tuple(sent.shape) != tuple(param.shape):
            raise GradleakError(
                f"{who} sent {name} of shape {tuple(sent.shape)}, the server's model has {tuple(param.shape)}: "
                "the client's model is not the server's"
            )
        delta = sent.detach().to(torch.float32) - sent_before.detach().to(torch.float32)
        if not bool(torch.isfinite(delta).all()):
            raise GradleakError(f"{who} sent non-finite values in {name}: nothing to attack")
        tensors.append(delta)
    if not (isinstance(received.num_examples, int) and received.num_examples >= 1):
        raise GradleakError(f"{who} reported {received.num_examples!r} examples: expected a whole number >= 1")
    plan = received.plan
    batch = plan.local_batch_size
    if plan.local_steps == 1 and (batch is None or batch >= received.num_examples):
        # One full-batch SGD step: the change is exactly -lr x the gradient the client computed,
        # so the attack gets that gradient (with its declared defenses, e.g. DP-SGD's noise model).
        return SharedUpdate(
            tensors=tuple(-t / float(plan.local_lr) for t in tensors),
            kind="gradient",
            batch_size=received.num_examples,
            input_shape=input_shape,
            num_classes=num_classes,
            defenses=tuple(defenses),
            parameter_names=tuple(names),
            training=True,
        )
    return SharedUpdate(
        tensors=tuple(tensors),
        kind="weight_delta",
        batch_size=received.num_examples,
        input_shape=input_shape,
        num_classes=num_classes,
        local_steps=plan.local_steps,
        local_lr=float(plan.local_lr),
        defenses=tuple(defenses),
        parameter_names=tuple(names),
        training=True,  # a training client runs BatchNorm on batch statistics
        local_batch_size=batch if batch is not None and batch < received.num_examples else None,
    )


def score_row(scored: Any) -> dict[str, Any]:
    """A :class:`~gradleak.metrics.BatchScore` as plain numbers for ``metrics.json``."""
    return {
        "psnr": scored.psnr,
        "ssim": scored.ssim,
        "mse": scored.mse,
        "label_accuracy": scored.label_accuracy,
        "per_image": [
            {"psnr": s.psnr, "ssim": s.ssim, "mse": s.mse, "label": s.label, "recovered_label": s.recovered_label}
            for s in scored.per_image
        ],
        "order": list(scored.order),
    }


@dataclass
class LeakageAuditor:
    """Attack every received client update and write ``round-RRR/client-ID/`` plus an index page.

    Args:
        model: the server's model (its architecture; each round's weights come with the update).
        out_dir: a new or empty folder (never overwritten).
        input_shape: (channels, height, width) of one client sample.
        num_classes: the model's output size (default: its last Linear layer's).
        attack: a registered gradleak attack (``auto`` picks the strongest that applies).
        attack_settings: keyword settings of the attack (e.g. ``{"iterations": 300}``).
        client_defenses: the defense specs the clients are known to apply (e.g. the server's
            DP-SGD policy ``"opacus:noise_multiplier=1.0,max_grad_norm=1.0"``); the attack's
            noise model reads them.
        reference: in a simulation, ``reference(round, client)`` returns the client's private
            batch for scoring; ``None`` (or a ``None`` return) writes unscored results.
        seed: seed of each attack's random start.
        workers: 0 attacks inside :meth:`submit`; ``N`` >= 1 queues attacks to ``N`` background
            threads so that the federation is not held up (call :meth:`wait` at the end).
        torch_threads: torch's intra-op threads while attacking (restored afterwards with
            ``workers=0``); ``None`` leaves torch's setting. One thread is the default because a
            server process shares its cores with others: on a loaded 2-core machine one
            analytic inversion took 2.5 s with one thread and 86 s with two.
    """

    model: nn.Module
    out_dir: str | Path
    input_shape: tuple[int, int, int]
    num_classes: int | None = None
    attack: str = "auto"
    attack_settings: Mapping[str, Any] = field(default_factory=dict)
    client_defenses: Sequence[str] = ()
    reference: Reference | None = None
    seed: int = 0
    workers: int = 0
    torch_threads: int | None = 1

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.out_dir.exists() and (not self.out_dir.is_dir() or any(self.out_dir.iterdir())):
            raise GradleakError(
                f"the audit folder {self.out_dir} already exists and is not empty: pass a new folder "
                "(gradleak never overwrites earlier results)"
            )
        if len(tuple(self.input_shape)) != 3:
            raise GradleakError(f"input_shape must be (channels, height, width) (got {self.input_shape!r})")
        self.input_shape = tuple(int(s) for s in self.input_shape)  # type: ignore[assignment]
        if self.num_classes is None:
            self.num_classes = infer_num_classes(self.model)
        if self.workers < 0:
            raise GradleakError(f"workers must be >= 0 (got {self.workers})")
        from gradleak.attacks import ATTACKS
        from gradleak.defenses import parse_defenses

        ATTACKS.get(self.attack)  # an unknown attack fails now, in one line, not in round 1
        parse_defenses(list(self.client_defenses))
        self.rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=self.workers) if self.workers else None
        self._pending: list[Future[dict[str, Any]]] = []

    def submit(self, received: ReceivedUpdate) -> None:
        """Audit ``received`` now (``workers=0``) or queue it; never raises."""
        if self._pool is None:
            self.audit(received)
        else:
            self._pending.append(self._pool.submit(self.audit, received))

    def wait(self) -> list[dict[str, Any]]:
        """Finish queued audits and return one row per audited client update."""
        for future in self._pending:
            future.result()
        self._pending.clear()
        return list(self.rows)

    def close(self) -> None:
        """:meth:`wait`, then stop the worker threads."""
        self.wait()
        if self._pool is not None:
            self._pool.shutdown()

    def record_failure(self, server_round: int, client: str, error: BaseException) -> dict[str, Any]:
        """Record a client update that could not be audited (the federation goes on)."""
        message = str(error) if isinstance(error, GradleakError) else f"{type(error).__name__}: {error}"
        message = " ".join(message.split())
        log.warning("gradleak audit of client %s in round %s failed: %s", client, server_round, message)
        row = {"round": server_round, "client": client, "status": "failed", "error": message}
        self._add(row)
        return row

    def audit(self, received: ReceivedUpdate) -> dict[str, Any]:
        """Attack one update, score it when the reference is available, write its folder; never raises."""
        try:
            return self._audit(received)
        except Exception as error:  # noqa: BLE001 - a failed attack must never stop the federation
            return self.record_failure(received.server_round, received.client, error)

    def _audit(self, received: ReceivedUpdate) -> dict[str, Any]:
        start = time.perf_counter()
        assert self.num_classes is not None
        update = shared_update(
            self.model, received, input_shape=self.input_shape, num_classes=self.num_classes,
            defenses=self.client_defenses,
        )
        server_model = copy.deepcopy(self.model)
        state = server_model.state_dict()
        for name in state:
            if name in received.before:
                state[name] = received.before[name].detach().to(state[name].dtype)
        server_model.load_state_dict(state)
        threads = torch.get_num_threads()
        if self.torch_threads is not None:
            torch.set_num_threads(self.torch_threads)
        try:
            result = reconstruct(
                server_model, update, attack=self.attack, generator=torch.Generator().manual_seed(self.seed),
                **dict(self.attack_settings),
            )
        finally:
            if self.torch_threads is not None and self._pool is None:
                torch.set_num_threads(threads)
        row: dict[str, Any] = {
            "round": received.server_round,
            "client": received.client,
            "status": "ok",
            "attack": self.attack,
            "batch_size": update.batch_size,
            "local_steps": received.plan.local_steps,
            "local_lr": received.plan.local_lr,
            "local_batch_size": received.plan.local_batch_size,
            "attacked_as": update.kind,
            "defenses": list(update.defenses),
            "attack_seconds": result.seconds,
            "stop_reason": result.stop_reason,
            "recovered_labels": [int(v) for v in result.labels],
        }
        truth = self.reference(received.server_round, received.client) if self.reference is not None else None
        if truth is not None:
            images, labels = truth
            row.update(score_row(score(result, images, labels)))
        folder = self.out_dir / f"round-{received.server_round:03d}" / f"client-{received.client}"
        write_client_page(folder, row, result.images, truth[0] if truth is not None else None)
        row["folder"] = str(folder.relative_to(self.out_dir))
        row["seconds"] = time.perf_counter() - start
        self._add(row)
        log.info(
            "gradleak audit: round %s client %s %s", received.server_round, received.client,
            f"PSNR {row['psnr']:.1f} dB" if "psnr" in row else "unscored",
        )
        return row

    def _add(self, row: dict[str, Any]) -> None:
        with self._lock:
            self.rows.append(row)
            self.rows.sort(key=lambda r: (r["round"], r["client"]))
            write_index(Path(self.out_dir), self.rows)

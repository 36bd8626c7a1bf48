"""A Flower strategy wrapper that audits what every client's update leaks, round by round.

Three lines in a Flower ``ServerApp`` (Flower's Message API, ``flwr`` >= 1.21)::

    from gradleak.integrations.flower import GradleakAudit
    strategy = GradleakAudit(FedAvg(), model=Net(), out_dir="audit", input_shape=(3, 32, 32))
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(Net().state_dict()), ...)

The wrapper passes every call to the wrapped strategy unchanged (what clients receive and what
is aggregated stay the same). On the way it keeps the weights and the train config it sent to
each node, and for every reply it attacks the weight change (client weights minus the weights
sent) with a gradleak attack, knowing from its own config the learning rate, local steps and
batch size, and from the reply the example count a FedAvg client reports anyway. Clients send
nothing extra. A failed attack is logged and recorded (``status: failed``), never raised.
Results go to ``out_dir`` (see :mod:`gradleak.integrations.audit_report`).

Needs ``pip install 'gradleak[flower]'``; without it importing this module raises one line.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradleak.errors import GradleakError
from gradleak.integrations.audit import LeakageAuditor, ReceivedUpdate, Reference, TrainingPlan

try:
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
    from flwr.serverapp import Grid
    from flwr.serverapp import strategy as flower_strategies
    from flwr.serverapp.strategy import Strategy
except ImportError:
    raise GradleakError(
        "gradleak.integrations.flower needs Flower: pip install 'gradleak[flower]'"
    ) from None


def strategy_names() -> list[str]:
    """The Flower strategies that can be wrapped by name (``flwr.serverapp.strategy``)."""
    return sorted(
        name for name, value in vars(flower_strategies).items()
        if inspect.isclass(value) and issubclass(value, Strategy) and value is not Strategy
    )


def build_strategy(strategy: Strategy | str, **settings: Any) -> Strategy:
    """A Flower strategy: ``strategy`` itself, or the ``flwr.serverapp.strategy`` class of that name.

    Example:
        >>> type(build_strategy("FedAvg", min_available_nodes=2)).__name__
        'FedAvg'
        >>> build_strategy("FedAwesome")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gradleak.errors.GradleakError: unknown Flower strategy 'FedAwesome': choose one of Bulyan, ...
    """
    if isinstance(strategy, Strategy):
        if settings:
            raise GradleakError("strategy settings apply only to a strategy given by name: set them on your strategy")
        return strategy
    if isinstance(strategy, str):
        names = strategy_names()
        if strategy not in names:
            raise GradleakError(f"unknown Flower strategy {strategy!r}: choose one of {', '.join(names)}")
        try:
            return getattr(flower_strategies, strategy)(**settings)
        except TypeError as error:
            raise GradleakError(f"bad settings for Flower strategy {strategy}: {error}") from None
    raise GradleakError(
        f"GradleakAudit wraps a Flower strategy (flwr.serverapp.strategy.Strategy), not {type(strategy).__name__}: "
        "pass e.g. FedAvg() or the name 'FedAvg'"
    )


class GradleakAudit(Strategy):
    """Wrap a Flower strategy; attack each client's update each round and write the results.

    Args:
        strategy: the strategy to wrap (an instance, or a ``flwr.serverapp.strategy`` name).
        model: the server's model (architecture; weights come from each round's arrays).
        out_dir: a new or empty folder for the results.
        input_shape: (channels, height, width) of one client sample.
        lr_key, steps_key, batch_size_key: the keys of the server's train config that tell
            clients their learning rate, local step count and mini-batch size.
        examples_key: the metric key of the client's example count (FedAvg's weighting key).
        default_steps: local steps when the config has no ``steps_key``.
        attack, attack_settings, client_defenses, reference, seed, workers, torch_threads, num_classes: as in
            :class:`~gradleak.integrations.audit.LeakageAuditor`.
        strategy_settings: settings for a strategy given by name.
    """

    def __init__(
        self,
        strategy: Strategy | str,
        *,
        model: nn.Module,
        out_dir: str | Path,
        input_shape: tuple[int, int, int],
        num_classes: int | None = None,
        attack: str = "auto",
        attack_settings: Mapping[str, Any] | None = None,
        client_defenses: Sequence[str] = (),
        reference: Reference | None = None,
        lr_key: str = "lr",
        steps_key: str = "local-steps",
        batch_size_key: str = "batch-size",
        examples_key: str = "num-examples",
        default_steps: int = 1,
        seed: int = 0,
        workers: int = 0,
        torch_threads: int | None = 1,
        strategy_settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.strategy = build_strategy(strategy, **dict(strategy_settings or {}))
        self.auditor = LeakageAuditor(
            model, out_dir, input_shape=input_shape, num_classes=num_classes, attack=attack,
            attack_settings=dict(attack_settings or {}), client_defenses=tuple(client_defenses),
            reference=reference, seed=seed, workers=workers, torch_threads=torch_threads,
        )
        self.lr_key, self.steps_key, self.batch_size_key = lr_key, steps_key, batch_size_key
        self.examples_key = examples_key
        self.default_steps = default_steps
        self.arrays_key = str(getattr(self.strategy, "arrayrecord_key", "arrays"))
        self.config_key = str(getattr(self.strategy, "configrecord_key", "config"))
        # round -> node id -> (weights sent, train config sent)
        self._sent: dict[int, dict[int, tuple[dict[str, torch.Tensor], dict[str, Any]]]] = {}

    # The Strategy interface: pass through, remembering what was sent and auditing what came back.

    def summary(self) -> None:
        self.strategy.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        sent: dict[int, tuple[dict[str, torch.Tensor], dict[str, Any]]] = {}
        converted: dict[int, dict[str, torch.Tensor]] = {}  # strategies send one record to all nodes
        for message in messages:
            try:
                content = message.content
                record = content[self.arrays_key]
                if id(record) not in converted:
                    converted[id(record)] = _state_dict(record)
                weights = converted[id(record)]
                train_config = dict(content[self.config_key]) if self.config_key in content else {}
                sent[message.metadata.dst_node_id] = (weights, train_config)
            except Exception as error:  # noqa: BLE001 - auditing must not stop the federation
                self.auditor.record_failure(server_round, str(message.metadata.dst_node_id), error)
        self._sent = {server_round: sent}  # keep only the current round's weights in memory
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)  # read twice: by the audit and by the wrapped strategy
        self.audit_replies(server_round, replies)
        return self.strategy.aggregate_train(server_round, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    def start(self, *args: Any, **kwargs: Any) -> Any:
        """Flower's ``Strategy.start``, then wait for queued audits and write the final index."""
        try:
            return super().start(*args, **kwargs)
        finally:
            self.auditor.close()

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One row per audited client update so far (``status`` ok or failed, scores when known)."""
        return list(self.auditor.rows)

    def audit_replies(self, server_round: int, replies: Sequence[Message]) -> None:
        """Audit the train replies of ``server_round`` (called by :meth:`aggregate_train`); never raises.

        A reply that is not what a client of this server should send (no weights, other
        shapes, no example count) is recorded as a failed audit with its one-line reason.
        """
        for reply in replies:
            node = reply.metadata.src_node_id
            try:
                if reply.has_error():
                    continue  # the wrapped strategy logs client errors; nothing was sent to audit
                received = self._received(server_round, node, reply)
            except Exception as error:  # noqa: BLE001 - a bad reply is recorded, the federation goes on
                self.auditor.record_failure(server_round, str(node), error)
                continue
            self.auditor.submit(received)

    def _received(self, server_round: int, node: int, reply: Message) -> ReceivedUpdate:
        who = f"client {node} in round {server_round}"
        if node not in self._sent.get(server_round, {}):
            raise GradleakError(f"{who} replied without having been sent weights this round: nothing to compare with")
        before, config = self._sent[server_round][node]
        content = reply.content
        array_records = [key for key in content.array_records]
        if self.arrays_key not in array_records:
            raise GradleakError(
                f"{who} sent no ArrayRecord under {self.arrays_key!r} (it sent {sorted(content.keys())}): "
                "expected its trained weights there"
            )
        metrics = {k: v for record in content.metric_records.values() for k, v in record.items()}
        if self.examples_key not in metrics:
            raise GradleakError(
                f"{who} reported no {self.examples_key!r} metric (it reported {sorted(metrics)}): "
                "pass examples_key=… naming the example count your clients report"
            )
        plan = TrainingPlan(
            local_lr=_config_number(config, self.lr_key, float, "learning rate", "lr_key"),
            local_steps=_config_number(config, self.steps_key, int, "local step count", "steps_key", self.default_steps),
            local_batch_size=_config_number(config, self.batch_size_key, int, "batch size", "batch_size_key", None),
        )
        return ReceivedUpdate(
            server_round=server_round,
            client=str(node),
            before=before,
            after=_state_dict(content[self.arrays_key]),
            num_examples=_whole(metrics[self.examples_key], f"{who}'s {self.examples_key!r}"),
            plan=plan,
        )


def _state_dict(record: Any) -> dict[str, torch.Tensor]:
    if not isinstance(record, ArrayRecord):
        raise GradleakError(f"expected an ArrayRecord of model weights, got {type(record).__name__}")
    return {name: tensor.detach().clone() for name, tensor in record.to_torch_state_dict().items()}


def _whole(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise GradleakError(f"{what} is {value!r}, not a whole number")
    return int(value)


_MISSING = object()


def _config_number(config: Mapping[str, Any], key: str, kind: type, what: str, option: str, default: Any = _MISSING) -> Any:
    if key not in config:
        if default is _MISSING:
            raise GradleakError(
                f"the server's train config has no {key!r} ({what}; it has {sorted(config)}): "
                f"add it to the config you pass to start(), or pass {option}=… naming yours"
            )
        return default
    value = config[key]
    if kind is int:
        return _whole(value, f"the server's {key!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GradleakError(f"the server's {key!r} is {value!r}, not a number")
    return float(value)

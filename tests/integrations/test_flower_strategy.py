"""GradleakAudit, the Flower strategy wrapper, driven message by message (no Flower processes).

Replies are what a real FedAvg client sends: its weights after one SGD step on a bundled
CIFAR-10 test image and its example count. The end-to-end run with the real SuperLink and
SuperNodes is in ``test_flower_federation.py``.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest
import torch

pytest.importorskip("flwr")

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from gradleak.errors import GradleakError  # noqa: E402
from gradleak.integrations.flower import GradleakAudit, build_strategy  # noqa: E402
from gradleak.models import build_model  # noqa: E402
from tests.integrations.test_opacus import cifar10_batch  # noqa: E402

NODES = (11, 22)


class TwoNodeGrid:
    """Only what FedAvg.configure_train asks of a Grid: the connected node ids."""

    def get_node_ids(self):
        return list(NODES)


@pytest.fixture
def task_identity(monkeypatch):
    # Flower stamps every Message with the identity of the process it runs in.
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    return TaskIdentity


def lenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("lenet", channels=3, image_size=32, num_classes=10)


def client_reply(message: Message, node: int, image: torch.Tensor, label: torch.Tensor, *, lr: float, content=None) -> Message:
    """A FedAvg client: one SGD step on its image, then its weights and example count."""
    model = lenet()
    model.load_state_dict(message.content["arrays"].to_torch_state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    torch.nn.functional.cross_entropy(model(image), label).backward()
    optimizer.step()
    TaskIdentity._node_id = node
    if content is None:
        content = {"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord({"num-examples": 1})}
    return Message(content=RecordDict(content), reply_to=message)


def one_round(strategy, task_identity, *, contents=None, lr=0.01, config=None):
    images, labels = cifar10_batch(2)
    arrays = ArrayRecord(lenet().state_dict())
    train_config = ConfigRecord(config if config is not None else {"lr": lr, "local-steps": 1, "batch-size": 1})
    task_identity._node_id = 0
    messages = list(strategy.configure_train(1, arrays, train_config, TwoNodeGrid()))
    replies = []
    for message in messages:  # client NODES[i] holds image i and sends contents[i]
        i = NODES.index(message.metadata.dst_node_id)
        content = None if contents is None else contents[i]
        replies.append(client_reply(message, NODES[i], images[i : i + 1], labels[i : i + 1], lr=lr, content=content))
    return replies, (images, labels)


def reference_for(images, labels):
    def reference(server_round: int, client: str):
        i = NODES.index(int(client))
        return images[i : i + 1], labels[i : i + 1]

    return reference


def test_each_client_update_is_attacked_scored_and_written_and_aggregation_is_unchanged(tmp_path, task_identity):
    images, labels = cifar10_batch(2)
    strategy = GradleakAudit(FedAvg(min_available_nodes=2), model=lenet(), out_dir=tmp_path / "audit",
                             input_shape=(3, 32, 32), reference=reference_for(images, labels))
    replies, _ = one_round(strategy, task_identity)
    arrays, metrics = strategy.aggregate_train(1, replies)
    expected, _ = FedAvg(min_available_nodes=2).aggregate_train(1, replies)
    assert all(torch.equal(a, b) for a, b in zip(arrays.to_torch_state_dict().values(), expected.to_torch_state_dict().values()))
    rows = strategy.rows
    assert [(r["round"], r["client"], r["status"]) for r in rows] == [(1, "11", "ok"), (1, "22", "ok")]
    assert all(r["psnr"] > 30 for r in rows), [r["psnr"] for r in rows]
    assert all(r["local_lr"] == 0.01 and r["local_steps"] == 1 and r["batch_size"] == 1 for r in rows)
    for row in rows:
        folder = tmp_path / "audit" / row["folder"]
        assert {p.name for p in folder.iterdir()} == {"index.html", "metrics.json", "reconstruction.png", "private.png"}
        assert json.loads((folder / "metrics.json").read_text())["psnr"] == row["psnr"]
    index = (tmp_path / "audit" / "index.html").read_text()
    assert index.count("<tr>") == 3 and "http" not in index


def test_a_failed_attack_is_recorded_and_the_federation_goes_on(tmp_path, task_identity):
    strategy = GradleakAudit("FedAvg", strategy_settings={"min_available_nodes": 2}, model=lenet(),
                             out_dir=tmp_path / "audit", input_shape=(3, 32, 32), attack_settings={"iterations": 0})
    replies, _ = one_round(strategy, task_identity)
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    assert [r["status"] for r in strategy.rows] == ["failed", "failed"]
    assert all("--iters must be at least 1" in r["error"] and "\n" not in r["error"] for r in strategy.rows)


@pytest.mark.parametrize(
    "bad, words",
    [
        ("other-key", "sent no ArrayRecord under 'arrays'"),
        ("no-count", "reported no 'num-examples' metric"),
        ("other-shape", "the client's model is not the server's"),
    ],
)
def test_a_client_that_sends_something_else_gets_a_one_line_failure(tmp_path, task_identity, bad, words):
    wrong = torch.nn.Linear(4, 2).state_dict()
    strategy = GradleakAudit(FedAvg(min_available_nodes=2), model=lenet(), out_dir=tmp_path / "audit", input_shape=(3, 32, 32))
    bad_content = {
        "other-key": {"weights": ArrayRecord(lenet().state_dict()), "metrics": MetricRecord({"num-examples": 1})},
        "no-count": {"arrays": ArrayRecord(lenet().state_dict()), "metrics": MetricRecord({"loss": 1.0})},
        "other-shape": {"arrays": ArrayRecord({"body.0.weight": wrong["weight"], **{k: v for k, v in lenet().state_dict().items() if k != "body.0.weight"}}),
                        "metrics": MetricRecord({"num-examples": 1})},
    }[bad]
    replies, _ = one_round(strategy, task_identity, contents=[None, bad_content])
    strategy.audit_replies(1, replies)
    rows = {r["client"]: r for r in strategy.rows}
    assert rows["11"]["status"] == "ok"
    assert rows["22"]["status"] == "failed" and words in rows["22"]["error"], rows["22"]
    assert "\n" not in rows["22"]["error"]


def test_a_server_config_without_the_learning_rate_is_named(tmp_path, task_identity):
    strategy = GradleakAudit(FedAvg(min_available_nodes=2), model=lenet(), out_dir=tmp_path / "audit", input_shape=(3, 32, 32))
    replies, _ = one_round(strategy, task_identity, config={"learning-rate": 0.01})
    strategy.aggregate_train(1, replies)
    assert all(r["status"] == "failed" and "has no 'lr'" in r["error"] and "lr_key=" in r["error"] for r in strategy.rows)


def test_bad_settings_get_one_line(tmp_path):
    with pytest.raises(GradleakError, match="unknown Flower strategy 'FedAwesome': choose one of .*FedAvg"):
        build_strategy("FedAwesome")
    with pytest.raises(GradleakError, match="wraps a Flower strategy .* not dict"):
        GradleakAudit({}, model=lenet(), out_dir=tmp_path / "a", input_shape=(3, 32, 32))
    with pytest.raises(GradleakError, match="unknown attack 'dgl'"):
        GradleakAudit(FedAvg(), model=lenet(), out_dir=tmp_path / "b", input_shape=(3, 32, 32), attack="dgl")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "old.txt").write_text("earlier results")
    with pytest.raises(GradleakError, match="already exists and is not empty"):
        GradleakAudit(FedAvg(), model=lenet(), out_dir=tmp_path / "c", input_shape=(3, 32, 32))


def test_without_flower_the_import_names_the_extra(monkeypatch):
    monkeypatch.delitem(sys.modules, "gradleak.integrations.flower", raising=False)
    for name in [m for m in sys.modules if m == "flwr" or m.startswith("flwr.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "flwr", None)
    with pytest.raises(GradleakError, match=r"^gradleak.integrations.flower needs Flower: pip install 'gradleak\[flower\]'$"):
        importlib.import_module("gradleak.integrations.flower")


def test_import_gradleak_imports_neither_flower_nor_opacus():
    code = (
        "import sys, gradleak, gradleak.defenses, gradleak.attacks, gradleak.integrations, gradleak.integrations.audit; "
        "print(sorted(m for m in ('flwr', 'opacus') if m in sys.modules))"
    )
    import os
    from pathlib import Path

    import gradleak

    env = {**os.environ, "PYTHONPATH": str(Path(gradleak.__file__).resolve().parents[1])}  # this checkout
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120, env=env)
    assert out.stdout.strip() == "[]"

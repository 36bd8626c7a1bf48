"""The README's Python code runs as written: every ```python block, in order, in one namespace
(later blocks use what earlier ones defined), in a scratch folder; then the components the
"Extending gradleak" section registers work where a user would use them."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

BLOCK = re.compile(r"```python\n(.*?)```", re.S)  # ```py blocks (fragments of other apps) are not run


def _registries() -> dict:
    from gradleak.attacks import ATTACKS
    from gradleak.data import DATASETS
    from gradleak.data.backends import BACKENDS
    from gradleak.defenses import DEFENSES
    from gradleak.metrics import METRICS
    from gradleak.models import MODELS
    from gradleak.scenarios import SCENARIOS

    return {"attack": ATTACKS._items, "dataset": DATASETS._items, "backend": BACKENDS, "defense": DEFENSES._items,
            "metric": METRICS._items, "model": MODELS._items, "scenario": SCENARIOS._items}


def _registered() -> dict[str, set[str]]:
    return {kind: set(items) for kind, items in _registries().items()}


def _forget(before: dict[str, set[str]]) -> None:
    for kind, items in _registries().items():
        for name in set(items) - before[kind]:
            del items[name]


def readme_blocks() -> list[str]:
    return BLOCK.findall((REPO / "README.md").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def readme_namespace(tmp_path_factory: pytest.TempPathFactory):
    blocks = readme_blocks()
    assert len(blocks) >= 7, "the README lost its Python examples"
    folder = tmp_path_factory.mktemp("readme")
    before = os.getcwd()
    os.chdir(folder)
    import sys
    import types

    module = types.ModuleType("readme_examples")  # dataclasses look their module up in sys.modules
    sys.modules[module.__name__] = module
    namespace: dict = module.__dict__
    before_names = _registered()
    try:
        for i, code in enumerate(blocks):
            try:
                exec(compile(code, f"README.md python block {i + 1}", "exec"), namespace)
            except Exception as error:
                pytest.fail(f"README python block {i + 1} failed: {type(error).__name__}: {error}\n{code}")
    finally:
        os.chdir(before)
    yield namespace
    _forget(before_names)  # later tests see the registries as the package ships them
    sys.modules.pop(module.__name__, None)


def test_readme_python_blocks_run(readme_namespace):
    assert readme_namespace["score"].psnr > 40  # the quick tour's two images, exactly


def test_registered_components_work_as_documented(readme_namespace, tmp_path: Path):
    import gradleak
    from gradleak.data import load_samples, load_samples as load

    images, labels = load_samples("cifar10", [2], split="test")
    model = gradleak.api.registration  # noqa: F841 - the registry module is importable
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    # the defense, by its spec, with its declared noise model
    update = gradleak.client_update(net, images, labels, defenses=["normclip:0.001"])
    assert update.defenses == ("normclip:0.001",)
    assert float(torch.sqrt(sum((t**2).sum() for t in update.tensors))) <= 0.001 + 1e-9
    # the attack, and the metric in the score
    result = gradleak.reconstruct(net, update, attack="grey")
    score = gradleak.score(result, images, labels)
    assert score.label_accuracy == 1.0 and "mae" in score.per_image[0].extra
    # the scenario sends only the last layer
    head = gradleak.client_update(net, images, labels, scenario="head-only")
    assert head.parameter_names == ("3.weight", "3.bias")
    # the dataset reads a folder of PNGs
    from PIL import Image

    folder = tmp_path / "pngfolder" / "test"
    folder.mkdir(parents=True)
    Image.new("RGB", (40, 40), (10, 200, 30)).save(folder / "7_leaf.png")
    x, y = load("pngfolder", [0], split="test", root=tmp_path)
    assert tuple(x.shape) == (1, 3, 32, 32) and int(y[0]) == 7

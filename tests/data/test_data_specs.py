"""Dataset specs, the registry and split validation."""

from __future__ import annotations

import dataclasses

import pytest

from gradleak.data import DATASETS, DatasetSpec, get_spec, num_classes
from gradleak.errors import GradleakError


def test_all_six_registered_with_expected_shapes() -> None:
    assert DATASETS.names() == ["cifar100", "cifar10", "mnist", "fashionmnist", "svhn", "lfw"]
    shapes = {n: (get_spec(n).channels, get_spec(n).image_size, get_spec(n).num_classes) for n in DATASETS}
    assert shapes == {
        "cifar100": (3, 32, 100),
        "cifar10": (3, 32, 10),
        "mnist": (1, 28, 10),
        "fashionmnist": (1, 28, 10),
        "svhn": (3, 32, 10),
        "lfw": (3, 64, 5749),
    }
    assert get_spec("lfw").splits == ("train",)
    assert get_spec("svhn").splits == ("train", "test", "extra")


def test_spec_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_spec("mnist").channels = 3  # type: ignore[misc]
    assert isinstance(get_spec("mnist"), DatasetSpec)


def test_get_spec_accepts_titles_and_lists_choices() -> None:
    assert get_spec("CIFAR-100").name == "cifar100"
    assert get_spec("fashionMNIST").name == "fashionmnist"
    with pytest.raises(GradleakError, match="unknown dataset 'imagenet': choose one of cifar100, .*lfw"):
        get_spec("imagenet")


def test_bad_split_lists_valid_ones(tmp_path) -> None:
    from gradleak.data import load_samples

    with pytest.raises(GradleakError, match="unknown split 'val' for mnist: choose one of train, test"):
        load_samples("mnist", [0], split="val", root=tmp_path, download=False)


def test_lfw_test_split_refused_clearly(tmp_path) -> None:
    from gradleak.data import dataset_size

    with pytest.raises(GradleakError, match="lfw has no 'test' split.*--split train"):
        dataset_size("lfw", split="test", root=tmp_path, download=False)


def test_num_classes_from_spec_without_disk(tmp_path) -> None:
    assert num_classes("cifar100", root=tmp_path / "absent", download=False) == 100

"""An index that is neither bundled nor on disk fails at once offline, naming the bundled range."""

from __future__ import annotations

import socket
import urllib.error
from pathlib import Path

import pytest

from gradleak.cli.parsing import OneLineParser
from gradleak.cli.run_command import add_run_arguments, config_from_args
from gradleak.data import download, load_samples
from gradleak.errors import GradleakError


def test_unresolvable_host_fails_at_once_and_names_the_bundled_range(
    tmp_path: Path, fake_net, monkeypatch: pytest.MonkeyPatch
) -> None:
    offline = urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))
    calls = fake_net([offline] * 4)  # mnist test: 2 files x 2 mirrors, each asked once
    sleeps: list[float] = []
    monkeypatch.setattr(download, "_sleep", sleeps.append)
    with pytest.raises(GradleakError) as caught:
        load_samples("mnist", [20], split="test", root=tmp_path, download=True)
    message = str(caught.value)
    assert message.startswith("--index 20 is not bundled (bundled: mnist test images 0..19, offline)"), message
    assert "use --index 0..19" in message[:160]  # the fix comes first, the download details after it
    assert "host not found" in message
    assert len(calls) == 4 and len(set(calls)) == 4, calls  # no retries of a host that does not resolve
    assert sleeps == []  # and no backoff


def _config(argv: list[str], classic: bool = True):
    parser = OneLineParser(prog="main.py")
    add_run_arguments(parser, classic=classic)
    config, _ = config_from_args(parser.parse_args(argv), classic=classic)
    return config


@pytest.mark.parametrize("classic", [True, False])
def test_split_test_without_index_takes_a_bundled_image(classic: bool) -> None:
    assert _config(["--dataset", "mnist", "--split", "test"], classic).indices == [0]
    assert _config(["--dataset", "cifar100", "--split", "test"], classic).indices == [0]
    assert _config(["--dataset", "mnist"], classic).indices == [25]  # train: the classic default
    assert _config(["--dataset", "svhn", "--split", "test"], classic).indices == [25]  # nothing bundled

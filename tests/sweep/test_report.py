"""Sweep and run reports: tables, plots and a self-contained report.html (parsed here)."""

from __future__ import annotations

import csv
import json
import math
from html.parser import HTMLParser

import pytest
import torch

from gradleak.errors import GradleakError
from gradleak.report import save_image, write_json
from gradleak.report.sweep_report import (
    defense_parameter,
    run_success,
    write_report,
    write_sweep_report,
)
from gradleak.sweep.store import Store

DEFENSES = ["none", "gaussian:0.0001", "gaussian:0.01", "prune:0.1", "prune:0.5", "fp16", "int8"]
PSNR = {"none": math.inf, "gaussian:0.0001": 35.0, "gaussian:0.01": 9.0, "prune:0.1": 40.0, "prune:0.5": 15.0,
        "fp16": 70.0, "int8": 45.0}


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.card_images: dict[str, int] = {}
        self._card: str | None = None
        self._div_depth = 0
        self.tables: dict[str, int] = {}
        self._table: str | None = None
        self._in_body = False
        self.headers: dict[str, list[str]] = {}
        self._in_th = False
        self.scripts = 0
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div":
            if "data-run" in a:
                self._card, self._div_depth = a["data-run"], 0
                self.card_images[self._card] = 0
            elif self._card is not None:
                self._div_depth += 1
        elif tag == "img":
            self.images.append(a["src"])
            if self._card is not None:
                self.card_images[self._card] += 1
        elif tag == "table":
            self._table = a.get("id") or f"table{len(self.tables)}"
            self.tables[self._table] = 0
            self.headers[self._table] = []
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.tables[self._table] += 1
        elif tag == "th":
            self._in_th = True
        elif tag == "script":
            self.scripts += 1
            assert "src" not in a
        elif tag in ("link", "a") and ("href" in a):
            self.links.append(a["href"])

    def handle_endtag(self, tag):
        if tag == "div" and self._card is not None:
            if self._div_depth == 0:
                self._card = None
            else:
                self._div_depth -= 1
        elif tag == "tbody":
            self._in_body = False
        elif tag == "th":
            self._in_th = False

    def handle_data(self, data):
        if self._in_th and self._table:
            self.headers[self._table].append(data)


def _fake_sweep(root, *, utility=True, attacks=("idlg",), defenses=DEFENSES, psnr_of=None):
    """A sweep folder as the engine leaves it, without running attacks. ``psnr_of(attack, defense,
    index)`` sets each run's PSNR (default: :data:`PSNR` less the index)."""
    store = Store(root / "store.sqlite")
    session = store.open_session("fake")
    torch.manual_seed(0)
    runs = []
    for attack, d, index in [(a, d, i) for a in attacks for d in defenses for i in (0, 1)]:
        run_id = f"{d.replace(':', '_').replace('.', '').replace(',', '_').replace('=', '')}-{index}"
        run_id = run_id if len(attacks) == 1 else f"{attack}-{run_id}"
        axes = {"dataset": "mnist", "model": "lenetmnist", "attack": attack, "scenario": "fedsgd", "defense": d,
                "batch_size": 1, "index": index, "seed": 1, "local_steps": 1}
        store.add_run(run_id, kind="attack", label=f"mnist/{attack}/{d}/i{index}", config={"indices": [index]},
                      axes=axes)
        claim = store.claim(run_id, session, "w")
        run_dir = root / "runs" / run_id
        run_dir.mkdir(parents=True)
        save_image(run_dir / "target.png", torch.rand(1, 28, 28))
        save_image(run_dir / "recon.png", torch.rand(1, 28, 28))
        psnr = PSNR[d] - index if psnr_of is None else psnr_of(attack, d, index)
        metrics = {"psnr": psnr, "ssim": 0.5, "mse": 0.01, "label_accuracy": 1.0, "iterations": 10, "seconds": 1.0,
                   "per_image": [{"psnr": psnr}]}
        write_json(run_dir / "metrics.json", metrics)
        store.finish(run_id, session, claim.attempt, metrics=metrics, out_dir=f"runs/{run_id}",
                     artifacts=[f"runs/{run_id}/target.png", f"runs/{run_id}/recon.png"])
        runs.append(run_id)
    # one failed run (no pictures) is still listed
    axes = {"dataset": "mnist", "model": "lenetmnist", "attack": "idlg", "scenario": "fedsgd", "defense": "none",
            "batch_size": 1, "index": 2, "seed": 1, "local_steps": 1}
    store.add_run("broken", kind="attack", label="mnist/none/i2", config={}, axes=axes)
    claim = store.claim("broken", session, "w")
    store.fail("broken", session, claim.attempt, "something went wrong")
    runs.append("broken")
    if utility:
        accuracies = (0.9, 0.89, 0.5, 0.88, 0.7, 0.9, 0.9) if defenses is DEFENSES else [
            0.9 - 0.4 * i / len(defenses) for i in range(len(defenses))]
        for d, acc in zip(defenses, accuracies):
            run_id = f"u-{d}"
            store.add_run(run_id, kind="utility", label=f"utility/{d}", config={},
                          axes={"dataset": "digits", "model": "lenetmnist", "defense": d, "seed": 0})
            claim = store.claim(run_id, session, "w")
            metrics = {"accuracy": acc, "epoch_accuracy": [acc], "model": "lenetmnist", "train_size": 10, "test_size": 5}
            store.finish(run_id, session, claim.attempt, metrics=metrics)
    store.end_session(session)
    (root / "sweep.toml").write_text('[sweep]\nname = "fake"\nsuccess_psnr = 30\n[grid]\ndatasets = ["mnist"]\n')
    return runs


def test_sweep_report_html_is_self_contained_and_complete(tmp_path):
    runs = _fake_sweep(tmp_path)
    files = write_sweep_report(tmp_path)
    assert files.html == tmp_path / "report" / "report.html"
    html = files.html.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html
    page = Page()
    page.feed(html)
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert set(page.card_images) == set(runs)
    assert all(page.card_images[r] == 2 for r in runs if r != "broken")  # target | reconstruction
    assert page.tables["runs"] == len(runs)  # one row per run
    assert "psnr" in page.headers["runs"] and "defense" in page.headers["runs"]
    assert page.tables["utility"] == len(DEFENSES)
    assert page.scripts == 1 and page.links == []
    assert "sortable" in html
    names = {p.name for p in files.plots}
    assert {"psnr_vs_gaussian.png", "psnr_vs_prune.png", "psnr_vs_precision.png", "privacy_utility.png"} <= names
    assert "psnr_vs_batch_size.png" not in names  # the sweep does not vary it
    # every plot is embedded in the page
    assert len(page.images) >= len(files.plots) + 2 * (len(runs) - 1)


def test_sweep_tables(tmp_path):
    runs = _fake_sweep(tmp_path)
    files = write_sweep_report(tmp_path)
    with open(files.out_dir / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(runs)
    by_id = {r["run_id"]: r for r in rows}
    assert by_id["none-0"]["psnr"] == "inf" and by_id["none-0"]["success"] == "1.0"
    assert by_id["broken"]["status"] == "failed" and by_id["broken"]["error"] == "something went wrong"
    with open(files.out_dir / "summary.csv", newline="") as f:
        summary = {r["defense"]: r for r in csv.DictReader(f)}
    assert float(summary["gaussian:0.01"]["success_rate"]) == 0.0
    assert float(summary["prune:0.1"]["success_rate"]) == 1.0
    assert float(summary["none"]["psnr_max"]) == 100.0  # inf capped for aggregates
    assert (summary["none"]["runs"], summary["none"]["done"], summary["none"]["failed"]) == ("3", "2", "1")
    with open(files.out_dir / "privacy_utility.csv", newline="") as f:
        pu = {r["defense"]: r for r in csv.DictReader(f)}
    assert float(pu["gaussian:0.01"]["accuracy_cost"]) == pytest.approx(0.4)
    md = (files.out_dir / "summary.md").read_text()
    assert md.startswith("| dataset | model |") and md.count("\n") == len(summary) + 2


def test_success_threshold_can_be_overridden(tmp_path):
    _fake_sweep(tmp_path, utility=False)
    files = write_sweep_report(tmp_path, success_psnr=50)
    with open(files.out_dir / "summary.csv", newline="") as f:
        summary = {r["defense"]: r for r in csv.DictReader(f)}
    assert float(summary["prune:0.1"]["success_rate"]) == 0.0 and float(summary["fp16"]["success_rate"]) == 1.0
    assert not (files.out_dir / "privacy_utility.png").exists()


def test_run_report(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_image(run_dir / "comparison.png", torch.rand(3, 40, 60))
    save_image(run_dir / "curves.png", torch.rand(3, 40, 60))
    write_json(run_dir / "metrics.json", {"psnr": 42.0, "ssim": 0.9, "per_image": [{"index": 3, "psnr": 42.0}]})
    write_json(run_dir / "config.json", {"dataset": "mnist", "defenses": ["fp16"]})
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    assert len(page.images) == 2 and all(s.startswith("data:image/png;base64,") for s in page.images)
    assert len(page.tables) == 3


def test_report_errors(tmp_path):
    with pytest.raises(GradleakError, match="does not exist"):
        write_report(tmp_path / "nope")
    with pytest.raises(GradleakError, match="neither a sweep folder"):
        write_report(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(GradleakError, match="is not a folder"):
        write_report(tmp_path / "f")


def test_helpers():
    assert defense_parameter("gaussian:0.001") == ("gaussian", 0.001)
    assert defense_parameter("none") == ("none", None)
    assert defense_parameter("fp16") == ("precision", "fp16")
    assert defense_parameter("prune:0.1+fp16") == ("stacked", "prune:0.1+fp16")
    assert defense_parameter("dpsgd:clip=1.0,sigma=0.5,delta=1e-05") == ("dpsgd", 0.5)
    assert run_success({"per_image": [{"psnr": 31.0}, {"psnr": 10.0}]}, 30) == 0.5
    assert run_success({"psnr": math.inf}, 30) == 1.0
    assert run_success(None, 30) is None
    assert json.loads(json.dumps(math.inf)) == math.inf

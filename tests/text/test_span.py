"""The span attack (DAGER-class) on a small decoder, defended text updates, and the text CLI's
input checks. Offline, seconds each (the GPT-2/BERT-base figures are in benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("rouge_score")

import torch  # noqa: E402

from gradleak.cli.text_command import main  # noqa: E402
from gradleak.defenses import parse_defenses  # noqa: E402
from gradleak.text.client import defended_gradient, mlm_gradient  # noqa: E402
from gradleak.text.model import load_text_model  # noqa: E402
from gradleak.text.runner import TextRunConfig, run_text_experiment  # noqa: E402
from gradleak.text.span_attack import rank_check, run_span_attack  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# Written for these tests (not in the bundled corpus); two share a prefix, one is repeated.
SENTENCES = [
    "the ferry leaves at seven",
    "my sister paints old boats by the harbour",
    "the ferry leaves at seven",
    "please water the plants on friday",
]


@pytest.fixture(scope="module")
def decoder():
    torch.set_num_threads(1)
    return load_text_model("tiny-gpt2-2l", seed=0)


def test_span_attack_recovers_batch_of_four_exactly(decoder) -> None:
    result = run_text_experiment(TextRunConfig(sentences=SENTENCES, model="tiny-gpt2-2l", device="cpu"))
    assert result.metrics["attack"] == "span"
    assert result.metrics["exact_match"] == 1.0
    assert result.recovered == SENTENCES
    # exactness is checked without ground truth: the recovered batch reproduces the gradient
    assert result.metrics["exact_batches"] == 1 and result.metrics["final_relative_l2"] < 1e-10


def test_fast_decoder_step_matches_transformers(decoder) -> None:
    from gradleak.text.layer_inputs import layer_inputs

    inputs = layer_inputs(decoder.model)
    ids = torch.tensor([decoder.tokenizer.encode("my sister paints old boats")])
    full = inputs.second_inputs(ids, torch.ones_like(ids))  # (1, L, d) from transformers
    t = ids.shape[1] - 1
    fast = inputs.extend(ids[:, :t], ids[0, t:], torch.float64)  # (1, 1, d)
    assert torch.allclose(fast[0, 0], full[0, t], atol=1e-10)


def test_attention_context_screen_passes_exactly_the_true_extensions(decoder) -> None:
    # block 0's attention context is tested instead of block 1's input (no MLP): same verdicts
    from gradleak.text.span import span_distance
    from gradleak.text.span_setup import build_setup

    batch = [decoder.tokenizer.encode(s) for s in SENTENCES]
    update = mlm_gradient(decoder.model, batch, 0, objective="causal")
    setup = build_setup(decoder.model, update, threshold=None, noise_source="auto")
    assert setup.screen is not None
    pool = torch.tensor(sorted({v for ids in batch for v in ids}))
    for ids in batch[:2]:
        for t in range(1, len(ids) - 1):
            truth = {s[t] for s in batch if s[:t] == ids[:t] and len(s) > t + 1}
            context = setup.inputs.screen(torch.tensor([ids[:t]]), pool, torch.float64)[0]
            passed = set(pool[span_distance(setup.screen.basis, context) < setup.screen_tau].tolist())
            assert passed == truth


def test_span_attack_recovers_encoder_batch_of_four_exactly() -> None:
    # a bidirectional encoder: no prefix can be tested, whole sentences are searched
    result = run_text_experiment(TextRunConfig(sentences=SENTENCES, model="tiny-bert-2l", device="cpu"))
    assert result.metrics["attack"] == "span"
    assert result.metrics["exact_match"] == 1.0
    assert sorted(result.recovered) == sorted(SENTENCES)
    assert result.metrics["final_relative_l2"] < 1e-10
    assert "encoder search" in result.metrics["stop_reason"]


def test_fast_encoder_position_matches_transformers() -> None:
    from gradleak.text.layer_inputs import layer_inputs

    encoder = load_text_model("tiny-bert-2l", seed=1)
    inputs = layer_inputs(encoder.model)
    ids = torch.tensor([encoder.tokenizer.encode("my sister paints old boats")])
    full = inputs.second_inputs(ids, torch.ones_like(ids))  # (1, L, d) from transformers
    for t in range(ids.shape[1]):
        fast = inputs.at_position(ids, t, ids[0, t : t + 1], torch.float64)  # (1, 1, d)
        assert torch.allclose(fast[0, 0], full[0, t], atol=1e-10)


def test_batch_beyond_rank_limit_states_reason(decoder) -> None:
    heldout = (ROOT / "benchmarks" / "text_heldout.txt").read_text().splitlines()
    batch = [decoder.tokenizer.encode(s) for s in heldout[:32]]
    update = mlm_gradient(decoder.model, batch, 0, objective="causal")
    check = rank_check(update, 256, causal=True)
    assert not check.within and check.tokens > 236
    said: list[str] = []
    result = run_span_attack(decoder.model, update, decoder.tokenizer.special_ids, announce=said.append)
    assert said and "BEYOND" in said[0] and "--batch-size" in said[0]
    assert "partial" in result.stop_reason
    assert len(result.token_ids) == 32


def test_dpsgd_text_update_declares_its_noise(decoder) -> None:
    from gradleak.attacks.noise_model import noise_model

    batch = [decoder.tokenizer.encode(s) for s in SENTENCES[:2]]
    exact = mlm_gradient(decoder.model, batch, 0)
    dp = defended_gradient(decoder.model, batch, 0, parse_defenses(["dpsgd:clip=1e6,sigma=0"]))
    # an unreachable clip and no noise: the mean of per-sentence gradients (token-weighted mean differs)
    assert all(torch.isfinite(t).all() for t in dp.tensors)
    noisy = defended_gradient(decoder.model, batch, 0, parse_defenses(["gaussian:1e-8"]),
                              generator=torch.Generator().manual_seed(0))
    model = noise_model(noisy.as_shared_update())
    assert float(model.variances[0]) == pytest.approx(1e-8)
    diff = torch.cat([(a - b).flatten() for a, b in zip(noisy.tensors, exact.tensors)])
    assert float(diff.var()) == pytest.approx(1e-8, rel=0.05)


def test_span_attack_under_small_noise_keeps_most_tokens() -> None:
    result = run_text_experiment(TextRunConfig(
        sentences=SENTENCES[:2], model="tiny-gpt2-2l", device="cpu", defenses=["gaussian:1e-12"],
    ))
    assert result.metrics["attack"] == "span"
    assert result.metrics["rouge1"] >= 0.8
    assert "noise" in result.metrics["stop_reason"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_cli_sentences_file_batches_and_quiet(tmp_path: Path, capsys) -> None:
    f = tmp_path / "batch.txt"
    f.write_text("\n".join(SENTENCES) + "\n\n")
    out = tmp_path / "run"
    rc = main(["--model", "tiny-gpt2-2l", "--sentences-file", str(f), "--batch-size", "2",
               "--out", str(out), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert str(out) in printed  # --quiet still says where the results went
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["client_batches"] == 2 and metrics["exact_match"] == 1.0
    for key in ("rouge1", "rouge2", "rougeL", "token_accuracy", "exact_match", "seconds"):
        assert key in metrics
    text = (out / "text.txt").read_text()
    for k, s in enumerate(SENTENCES, start=1):
        assert f"[{k}] original:  {s}" in text and f"[{k}] recovered: {s}" in text


def test_cli_unquoted_sentence(tmp_path: Path, capsys) -> None:
    assert main(["--sentence", "the", "quick", "brown", "fox", "--out", str(tmp_path / "o")]) == 2
    line = _error_line(capsys)
    assert "quote the sentence" in line and '"the quick brown fox"' in line
    assert not (tmp_path / "o").exists()


def test_cli_bad_sentences_file(tmp_path: Path, capsys) -> None:
    assert main(["--sentences-file", str(tmp_path / "missing.txt")]) == 2
    assert "does not exist" in _error_line(capsys)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    assert main(["--sentences-file", str(empty)]) == 2
    assert "no sentence" in _error_line(capsys)
    assert main(["--sentence", "hi", "--defense", "gaussian:-1", "--out", str(tmp_path / "o")]) == 2
    assert "gaussian" in _error_line(capsys)


def test_model_folder_with_remote_code_is_refused(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "evil-model"
    folder.mkdir()
    marker = tmp_path / "MARKER"
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil", "architectures": ["EvilForMaskedLM"],
        "auto_map": {"AutoConfig": "modeling_evil.EvilConfig",
                     "AutoModelForMaskedLM": "modeling_evil.EvilForMaskedLM"},
    }))
    (folder / "modeling_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nclass EvilConfig: pass\nclass EvilForMaskedLM: pass\n"
    )
    rc = main(["--model", str(folder), "--sentence", "hi there", "--out", str(tmp_path / "o")])
    assert rc == 2
    line = _error_line(capsys)
    assert "auto_map" in line and "never" in line
    assert not marker.exists()


def test_text_package_does_not_import_cli() -> None:
    import re

    imports_cli = re.compile(r"^\s*(from|import)\s+gradleak\.cli\b", re.MULTILINE)
    offenders = [
        str(p.relative_to(ROOT)) for p in (ROOT / "src" / "gradleak" / "text").rglob("*.py")
        if imports_cli.search(p.read_text())
    ]
    assert offenders == []
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run([sys.executable, str(ROOT / "text_main.py"), "--help"], capture_output=True,
                       text=True, env=env, timeout=120, check=False)
    assert r.returncode == 0 and "--sentences-file" in r.stdout


def test_ci_benchmark_runs() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "text_scale.py"), "--ci",
                        "--attacks", "span"], capture_output=True, text=True, env=env,
                       timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [ln.split() for ln in r.stdout.splitlines() if ln.startswith("heldout")]
    exact = [row for row in rows if row[2] == "none"]
    assert len(exact) == 2 and all(float(row[4]) == 1.0 for row in exact)  # rouge1 on exact updates

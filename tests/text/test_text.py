"""Text leakage (`gradleak text`): tokenizer, attack, metrics and CLI errors. Offline, seconds."""

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

from gradleak.errors import GradleakError  # noqa: E402
from gradleak.cli.text_command import main  # noqa: E402
from gradleak.text.metrics import lcs_length, score_text, token_accuracy  # noqa: E402
from gradleak.text.model import load_text_model  # noqa: E402
from gradleak.text.runner import TextRunConfig, run_text_experiment  # noqa: E402
from gradleak.text.tokenizer import build_vocab, builtin_tokenizer  # noqa: E402

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="module")
def tokenizer():
    return builtin_tokenizer()


# --- tokenizer -------------------------------------------------------------------------------


def test_tokenizer_round_trip(tokenizer) -> None:
    for text in [
        "the quick brown fox jumps over the lazy dog.",
        "my password is hunter2, don't tell anyone!",
    ]:
        ids = tokenizer.encode(text)
        assert ids[0] == tokenizer.special_ids["cls"] and ids[-1] == tokenizer.special_ids["sep"]
        assert tokenizer.hf.unk_token_id not in ids
        assert tokenizer.decode(ids) == text
    # Token level, for text whose spacing BERT's decoder cannot restore (brackets, colons):
    ids = tokenizer.encode("Zebras and Xylophones (rarely) appear: 2024? Ünïcode ~ok~")
    assert tokenizer.hf.unk_token_id not in ids
    assert tokenizer.encode(tokenizer.decode(ids)) == ids


def test_tokenizer_is_wordpiece_and_lowercases(tokenizer) -> None:
    assert tokenizer.tokens(tokenizer.encode("The Fox"))[1:-1] == ["the", "fox"]
    pieces = tokenizer.tokens(tokenizer.encode("xylophones"))[1:-1]
    assert len(pieces) > 1 and all(p.startswith("##") for p in pieces[1:])


def test_vocabulary_is_deterministic() -> None:
    first = build_vocab()
    build_vocab.cache_clear()
    second = build_vocab()
    assert first == second
    assert first[:5] == ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    assert len(set(first)) == len(first)


# --- model and client ------------------------------------------------------------------------


def test_builtin_model_is_seeded() -> None:
    a = load_text_model("tiny-bert-2l", seed=3).model
    b = load_text_model("tiny-bert-2l", seed=3).model
    c = load_text_model("tiny-bert-2l", seed=4).model
    wa, wb, wc = (m.get_input_embeddings().weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert a.config.num_hidden_layers == 2 and a.config.model_type == "bert"


# --- attack ----------------------------------------------------------------------------------


def test_attack_recovers_short_sentence() -> None:
    sentence = "the quick brown fox jumps over the lazy dog"
    result = run_text_experiment(TextRunConfig(sentences=[sentence], device="cpu", method="tag"))
    assert result.metrics["token_accuracy"] >= 0.9
    assert result.recovered == [sentence]  # in practice exact on a random tiny BERT
    assert result.attack.token_set_source == "output-bias"


def test_auto_uses_span_attack_for_one_sentence_on_an_encoder() -> None:
    sentence = "the quick brown fox jumps over the lazy dog"
    result = run_text_experiment(TextRunConfig(sentences=[sentence], device="cpu"))
    assert result.metrics["attack"] == "span" and result.recovered == [sentence]


def test_attack_recovers_batch_of_two() -> None:
    sentences = ["good morning my friend", "meet me at nine"]
    result = run_text_experiment(TextRunConfig(sentences=sentences, device="cpu"))
    assert result.metrics["token_accuracy"] >= 0.9
    assert result.metrics["batch_size"] == 2


def test_attack_never_receives_the_sentence() -> None:
    import inspect

    from gradleak.text.attack import run_text_attack
    from gradleak.text.client import TextUpdate

    assert list(inspect.signature(run_text_attack).parameters) == [
        "model", "update", "special", "config", "observer",
    ]
    assert set(TextUpdate.__dataclass_fields__) == {
        "tensors", "batch_size", "lengths", "objective", "defenses",
    }


# --- metrics ---------------------------------------------------------------------------------


def test_metrics_definitions() -> None:
    assert lcs_length([1, 2, 3, 4], [2, 1, 3, 4]) == 3
    assert token_accuracy([[1, 2, 3, 4]], [[1, 2, 3, 4]]) == 1.0
    # a batch's sentences may come back in any order
    assert token_accuracy([[1, 2], [3, 4, 5]], [[3, 4, 5], [1, 2]]) == 1.0
    s = score_text([[1, 2, 3]], [[1, 3, 2]], ["a b c"], ["a c b"])
    assert s.token_accuracy == pytest.approx(2 / 3)
    assert s.positional_accuracy == pytest.approx(1 / 3)
    assert s.exact_match == 0.0 and s.rouge1 == pytest.approx(1.0) and s.rouge2 == 0.0


# --- CLI -------------------------------------------------------------------------------------


def test_cli_writes_outputs(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    rc = main(["--sentence", "meet me at the station", "--out", str(out), "--quiet"])
    assert rc == 0
    assert {p.name for p in out.iterdir()} == {"text.txt", "metrics.json", "curves.png"}
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("token_accuracy", "exact_match", "rouge1", "rouge2", "rougeL"):
        assert key in metrics
    assert metrics["token_accuracy"] >= 0.9
    text = (out / "text.txt").read_text()
    assert "original:  meet me at the station" in text and "recovered:" in text
    # a non-empty --out is refused without --overwrite
    assert main(["--sentence", "hello", "--out", str(out), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("gradleak text: error: ")
    return lines[0]


def test_cli_empty_sentence(tmp_path: Path, capsys) -> None:
    assert main(["--sentence", "   ", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "empty" in _error_line(capsys)
    assert main(["--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "no sentence" in _error_line(capsys)


def test_cli_sentence_too_long(tmp_path: Path, capsys) -> None:
    long = " ".join(["word"] * 80)
    assert main(["--sentence", long, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    line = _error_line(capsys)
    assert "82 tokens" in line and "at most 64" in line


def test_cli_unknown_model_offline(tmp_path: Path, capsys, monkeypatch) -> None:
    out = str(tmp_path / "o")
    argv = ["--sentence", "hi there", "--model", "no-such-org/no-such-model-xyz", "--out", out]
    assert main([*argv, "--offline", "--quiet"]) == 2
    line = _error_line(capsys)
    assert "no-such-model-xyz" in line and "tiny-bert-2l" in line
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main([*argv, "--quiet"]) == 2
    assert "no-such-model-xyz" in _error_line(capsys)


def test_cli_bad_flags(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "o")
    assert main(["--sentence", "hi", "--iters", "0", "--out", out]) == 2
    assert "--iters" in _error_line(capsys)
    assert main(["--sentence", "hi", "--device", "cuda:7", "--out", out, "--quiet"]) == 2
    assert "cuda" in _error_line(capsys)
    with pytest.raises(SystemExit) as e:
        main(["--sentence", "hi", "--attack", "nope"])
    assert e.value.code == 2
    assert "invalid choice" in _error_line(capsys)


def test_errors_are_gradleak_errors() -> None:
    with pytest.raises(GradleakError, match="at most 64"):
        run_text_experiment(TextRunConfig(sentences=["a " * 70], device="cpu"))


# --- packaging -------------------------------------------------------------------------------


def _run_py(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_import_does_not_load_transformers() -> None:
    r = _run_py(
        "import sys, gradleak, gradleak.text, gradleak.cli.text_command\n"
        "assert 'transformers' not in sys.modules, 'transformers imported'\n"
        "assert 'tokenizers' not in sys.modules, 'tokenizers imported'\n"
    )
    assert r.returncode == 0, r.stderr


def test_missing_transformers_gives_install_hint(tmp_path: Path) -> None:
    r = _run_py(
        "import sys\n"
        "sys.modules['transformers'] = None\n"
        "from gradleak.cli.text_command import main\n"
        f"sys.exit(main(['--sentence', 'hi', '--out', {str(tmp_path / 'o')!r}, '--quiet']))\n"
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "gradleak text: error: text leakage needs the optional extra: pip install 'gradleak[text]'"
    ]

"""Text leakage (DLG's language experiment): ``gradleak text``.

A client computes the gradient of one language-model step (masked LM: BERT; causal LM: GPT-2) on
private sentences, optionally defended; :func:`gradleak.text.span_attack.run_span_attack` (exact,
DAGER-class) or :func:`gradleak.text.attack.run_text_attack` (TAG/DLG) recovers the sentences.

Importing this package is cheap and needs no optional dependency: ``transformers``,
``tokenizers`` and ``rouge-score`` (``pip install 'gradleak[text]'``) are imported only when a
model, tokenizer or score is built. Modules: ``corpus`` (offline tokenizer text), ``tokenizer``,
``model``, ``client``, ``attack``, ``span``, ``layer_inputs``, ``span_setup``, ``span_decoder``,
``span_encoder``, ``span_attack``, ``metrics``, ``runner``; the command line is :mod:`gradleak.cli.text_command`.
"""

from __future__ import annotations

__all__: list[str] = []

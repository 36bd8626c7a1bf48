"""Text leakage (DLG's language experiment): ``gradleak text``.

A client computes the gradient of one masked-LM step of a BERT (``transformers``) on private
sentences; :func:`gradleak.text.attack.run_text_attack` recovers the tokens from that gradient.

Importing this package is cheap and needs no optional dependency: ``transformers``,
``tokenizers`` and ``rouge-score`` (``pip install 'gradleak[text]'``) are imported only when a
model, tokenizer or score is built. Modules: ``corpus`` (offline tokenizer text), ``tokenizer``,
``model``, ``client``, ``attack``, ``metrics``, ``runner``; the command line is :mod:`gradleak.cli.text_command`.
"""

from __future__ import annotations

__all__: list[str] = []

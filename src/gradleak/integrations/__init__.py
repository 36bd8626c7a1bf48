"""Audit what a real federated pipeline leaks: adapters to frameworks gradleak does not ship.

* :mod:`gradleak.integrations.flower` -- :class:`~gradleak.integrations.flower.GradleakAudit`,
  a Flower strategy wrapper that attacks every client's update each round
  (``pip install 'gradleak[flower]'``).
* :mod:`gradleak.integrations.audit` -- the framework-free part: one received client update
  (server weights before, client weights after, the server's training config) becomes a
  :class:`~gradleak.types.SharedUpdate`, is attacked, scored when the experimenter holds the
  private data, and written out per round and client.

Nothing here is imported by ``import gradleak``; Flower and Opacus are imported only by the
modules that need them.
"""

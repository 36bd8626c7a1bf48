"""The command table: one static list of every ``gradleak`` command, each loaded on use.

A command is ``(help, "module:function")``; the function takes the arguments after the command
name and returns the exit code. Modules are imported only when their command runs, so
``gradleak --help`` stays fast and optional extras are needed only by the commands that use them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("reconstruct images from a shared gradient (or a captured update)", "gradleak.cli.run_command:cmd_gradleak_run"),
    "text": ("recover sentences from a language model's gradient", "gradleak.cli.text_command:main"),
    "train": ("train the client's model; writes a checkpoint for --weights", "gradleak.cli.train_command:cmd_train"),
    "sweep": ("run a grid of experiments on Dask (crash-safe, resumable)", "gradleak.cli.sweep_commands:cmd_sweep"),
    "report": ("tables, plots and report.html for a sweep or a run folder", "gradleak.cli.sweep_commands:cmd_report"),
    "utility": ("test accuracy when training under a defense", "gradleak.cli.sweep_commands:cmd_utility"),
    "inspect-model": ("flag imprint-style traps in a received model (client-side check)", "gradleak.cli.inspect_command:cmd_inspect"),
}


def command(name: str) -> Callable[[Sequence[str]], int]:
    """The function behind command ``name`` (imported now)."""
    module, _, function = COMMANDS[name][1].partition(":")
    return getattr(importlib.import_module(module), function)


def usage() -> str:
    lines = ["usage: gradleak COMMAND [options]   (gradleak COMMAND --help for its options)", "", "commands:"]
    width = max(9, *(len(name) for name in COMMANDS))
    lines += [f"  {name:<{width}} {text}" for name, (text, _) in COMMANDS.items()]
    lines += ["", "  --plugin FILE.py|MODULE (before or after the command) imports code that registers its own",
              "  attacks, defenses, models, datasets or scenarios"]
    return "\n".join(lines)

"""``gradleak`` console command and the classic DLG ``main.py`` flags.

Every user error is printed as one line (``gradleak run: error: …``) with exit code 2: never a
traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gradleak.cli.commands import COMMANDS, command, usage
from gradleak.cli.parsing import OneLineParser, guarded  # noqa: F401 - re-exported for callers of the old home
from gradleak.cli.run_command import DEMO_INDEX, cmd_run  # noqa: F401 - DEMO_INDEX re-exported
from gradleak.errors import GradleakError




def load_plugins(argv: list[str]) -> list[str]:
    """Import the ``--plugin FILE.py|MODULE`` arguments (anywhere in ``argv``) and the installed
    packages that declare a ``gradleak.plugins`` entry point, so that what they register exists
    before flags are parsed; returns ``argv`` without the ``--plugin`` arguments."""
    from importlib.metadata import entry_points

    from gradleak.models.external import load_module

    rest: list[str] = []
    targets: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--plugin":
            if i + 1 >= len(argv):
                raise GradleakError("--plugin needs a value: a .py file or a module that registers components")
            targets.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith("--plugin="):
            targets.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    for entry in entry_points(group="gradleak.plugins"):
        try:
            entry.load()
        except Exception as error:
            raise GradleakError(f"plugin {entry.name!r} ({entry.value}) failed to load: {type(error).__name__}: {error}") from None
    for target in targets:
        load_module(target, what=f"--plugin {target}")
    return rest


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = load_plugins(argv)
    except GradleakError as error:
        sys.stderr.write(f"gradleak: error: {error}\n")
        return error.exit_code
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from gradleak.version import __version__

        print(f"gradleak {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        sys.stderr.write(f"gradleak: error: unknown command {name!r}: choose one of {', '.join(COMMANDS)}\n")
        return 2
    return guarded(lambda: command(name)(rest), f"gradleak {name}")


def classic_main(argv: Sequence[str] | None = None) -> int:
    """``python main.py``: the classic DLG reproduction flags; DLG is the default attack."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return guarded(lambda: cmd_run(load_plugins(argv), prog="main.py", classic=True), "main.py")


if __name__ == "__main__":
    raise SystemExit(main())

"""Your own model on the command line: ``--model path/to/file.py:factory`` or ``package.module:factory``.

The factory is called as ``factory(num_classes, input_shape)`` with ``input_shape`` the shape of
one sample, e.g. ``(3, 32, 32)``, and returns a ``torch.nn.Module``. Loading a model file runs it:
it is your code, run as ``python`` would. Every failure is one line naming the file and the fix.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from torch import nn

from gradleak.errors import GradleakError


def is_external(name: str | None) -> bool:
    """Whether ``--model`` names a factory (``…:factory``) rather than a registered model.

    Example:
        >>> is_external("mymodels/cnn.py:build"), is_external("lenet")
        (True, False)
    """
    return bool(name) and ":" in name  # type: ignore[operator]


def load_factory(spec: str) -> Callable[..., nn.Module]:
    """The factory named by ``spec`` (``FILE.py:NAME`` or ``MODULE:NAME``)."""
    target, _, attribute = spec.rpartition(":")
    if not target or not attribute.isidentifier():
        raise GradleakError(
            f"--model {spec!r}: write FILE.py:FACTORY or package.module:FACTORY (e.g. --model models/cnn.py:build)"
        )
    module = load_module(target, what=f"--model {spec!r}")
    factory = getattr(module, attribute, None)
    if factory is None:
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise GradleakError(
            f"--model {spec!r}: {target} has no {attribute!r}; callables there: {', '.join(names[:12]) or 'none'}"
        )
    if not callable(factory):
        raise GradleakError(f"--model {spec!r}: {attribute!r} in {target} is a {type(factory).__name__}, not a function or class")
    return factory


def build_external(spec: str, *, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """Call the factory and check that it gave a usable model."""
    factory = load_factory(spec)
    try:
        model = factory(num_classes, tuple(input_shape))
    except Exception as error:  # the user's code: report its own message and where it failed
        raise GradleakError(f"--model {spec!r}: the factory raised {_where(error)}") from None
    if not isinstance(model, nn.Module):
        raise GradleakError(
            f"--model {spec!r}: the factory returned {type(model).__name__!r}, not a torch.nn.Module"
        )
    if not any(True for _ in model.parameters()):
        raise GradleakError(f"--model {spec!r}: the model has no parameters, so a client would share nothing")
    return model


def load_module(target: str, *, what: str) -> object:
    """Import ``target``, a ``.py`` file path or a dotted module name; ``what`` starts each error."""
    if target.endswith(".py") or "/" in target or "\\" in target:
        return _load_file(Path(target), what)
    return _import(target, what)


def _load_file(path: Path, what: str) -> object:
    if not path.is_file():
        raise GradleakError(f"{what}: {path} does not exist (give the path of a .py file)")
    if path.suffix != ".py":
        raise GradleakError(f"{what}: {path} is not a .py file")
    name = f"gradleak_user_{path.stem}_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:  # loaded already (a plugin and a model from one file): run it once
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise GradleakError(f"{what}: cannot load {path} as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as error:
        del sys.modules[name]
        raise GradleakError(f"{what}: {path} line {error.lineno}: syntax error: {error.msg}") from None
    except Exception as error:
        del sys.modules[name]
        raise GradleakError(f"{what}: running {path} raised {_where(error)}") from None
    return module


def _import(target: str, what: str) -> object:
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as error:
        raise GradleakError(f"{what}: no module named {error.name!r} (is it installed, or on PYTHONPATH?)") from None
    except Exception as error:
        raise GradleakError(f"{what}: importing {target} raised {_where(error)}") from None


def _where(error: BaseException) -> str:
    """``TypeError: message (file.py line 12)`` for the innermost frame of the user's code."""
    frames = traceback.extract_tb(error.__traceback__)
    user = [f for f in frames if "gradleak" not in Path(f.filename).parts[-3:-1]]
    place = f" ({Path(user[-1].filename).name} line {user[-1].lineno})" if user else ""
    message = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {message}{place}".rstrip(": ")

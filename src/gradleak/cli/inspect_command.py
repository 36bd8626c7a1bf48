"""``gradleak inspect-model``: what a client runs on a received model before training it.

One line per finding (see :mod:`gradleak.inspect`); exit code 1 when anything is found, 0 for a
clean model, 2 for bad input.
"""

from __future__ import annotations

from collections.abc import Sequence

from gradleak.cli.main import OneLineParser, register_command
from gradleak.errors import GradleakError


def cmd_inspect(argv: Sequence[str]) -> int:
    parser = OneLineParser(
        prog="gradleak inspect-model",
        description="Flag imprint-style traps (rows differing only in bias, huge first linear layers) in a received model.",
    )
    parser.add_argument("path", nargs="?", default=None,
                        help="checkpoint: .safetensors, or a torch state dict (read with weights_only=True), "
                        "e.g. the model.pt of gradleak run --save-model")
    parser.add_argument("--model", default=None, help="instead of a file: build this gradleak model (as a run would)")
    parser.add_argument("--dataset", default="cifar100", help="with --model: the dataset whose input it takes (default cifar100)")
    parser.add_argument("--scenario", choices=["fedsgd", "imprint"], default="fedsgd",
                        help="with --model: imprint = the model a malicious server would send")
    parser.add_argument("--bins", type=int, default=None, help="with --scenario imprint: its bins (default 1024)")
    parser.add_argument("--seed", type=int, default=1234, help="with --model: initialisation seed (default 1234)")
    args = parser.parse_args(list(argv))
    from gradleak.inspect import inspect_model, inspect_state, load_state

    if args.path is not None and args.model is not None:
        raise GradleakError("give a checkpoint path or --model, not both")
    if args.path is not None:
        state = load_state(args.path)
        findings = inspect_state(state)
        what = f"{args.path} ({len(state)} tensors)"
    elif args.model is not None:
        model = _build(args)
        findings = inspect_model(model)
        what = f"model {args.model}" + (" behind an imprint block" if args.scenario == "imprint" else "")
    else:
        raise GradleakError("nothing to inspect: give a checkpoint path (e.g. model.pt from gradleak run --save-model) or --model NAME")
    for finding in findings:
        print(finding)
    if findings:
        print(f"{len(findings)} finding(s) in {what}: do not train this model on private data")
        return 1
    print(f"no findings in {what}")
    return 0


def _build(args):  # type: ignore[no-untyped-def]
    import torch

    from gradleak.data import get_spec
    from gradleak.models import build_model, check_compatible

    spec = get_spec(args.dataset)
    check_compatible(args.model, channels=spec.channels, image_size=spec.image_size, dataset=spec.name)
    torch.manual_seed(args.seed)
    model = build_model(args.model, channels=spec.channels, image_size=spec.image_size, num_classes=spec.num_classes)
    if args.scenario == "imprint":
        from gradleak.data.public import public_images
        from gradleak.scenarios import Imprint
        from gradleak.scenarios.imprint import DEFAULT_BINS

        shape = (spec.channels, spec.image_size, spec.image_size)
        model = Imprint(bins=DEFAULT_BINS if args.bins is None else args.bins, seed=args.seed, public_images=public_images(spec.name, shape)).server_model(model)
    elif args.bins is not None:
        raise GradleakError("--bins applies to --scenario imprint: drop it or add --scenario imprint")
    return model


register_command("inspect-model", "flag imprint-style traps in a received model (client-side check)", cmd_inspect)

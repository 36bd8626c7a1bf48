"""``gradleak inspect-model``: what a client runs on a received model before training it.

One line per finding (see :mod:`gradleak.inspect`); exit code 1 when anything is found, 0 for a
clean model, 2 for bad input.
"""

from __future__ import annotations

from collections.abc import Sequence

from gradleak.cli.parsing import OneLineParser
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
    parser.add_argument("--scenario", choices=_scenario_names(), default="fedsgd",
                        help="with --model: the scenario whose server sends the model (imprint: a malicious server's)")
    parser.add_argument("--bins", type=int, default=None, help="with --scenario imprint: its bins (default 1024)")
    parser.add_argument("--seed", type=int, default=1234, help="with --model: initialisation seed (default 1234)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="with --model: also print what an update of this batch size can leak, per layer "
                        "(gradient rank, equations vs unknowns, the largest exactly recoverable batch)")
    args = parser.parse_args(list(argv))
    from gradleak.inspect import inspect_model, inspect_state, load_state

    if args.path is not None and args.model is not None:
        raise GradleakError("give a checkpoint path or --model, not both")
    if args.batch_size is not None and (args.model is None or args.batch_size < 1):
        raise GradleakError(f"--batch-size {args.batch_size} needs --model NAME and a batch of at least 1")
    if args.path is not None:
        state = load_state(args.path)  # read a chunk at a time by the checks
        findings = inspect_state(state)
        what = state.description
    elif args.model is not None:
        model = _build(args)
        findings = inspect_model(model)
        what = f"model {args.model}" + (f" as a {args.scenario} server sends it" if args.scenario != "fedsgd" else "")
    else:
        raise GradleakError("nothing to inspect: give a checkpoint path (e.g. model.pt from gradleak run --save-model) or --model NAME")
    if args.batch_size is not None:
        _print_identifiability(model, args)
    for finding in findings:
        print(finding)
    if findings:
        print(f"{len(findings)} finding(s) in {what}: do not train this model on private data")
        return 1
    print(f"no findings in {what}")
    return 0


def _print_identifiability(model, args) -> None:  # type: ignore[no-untyped-def]
    from gradleak.attacks.identifiability import identifiability
    from gradleak.data import get_spec

    spec = get_spec(args.dataset)
    print(identifiability(model, (spec.channels, spec.image_size, spec.image_size), args.batch_size).table())


def _build(args):  # type: ignore[no-untyped-def]
    import torch

    from gradleak.data import get_spec
    from gradleak.models import build_model, check_compatible
    from gradleak.scenarios import SCENARIOS, scenario_settings

    spec = get_spec(args.dataset)
    check_compatible(args.model, channels=spec.channels, image_size=spec.image_size, dataset=spec.name)
    torch.manual_seed(args.seed)
    model = build_model(args.model, channels=spec.channels, image_size=spec.image_size, num_classes=spec.num_classes)
    scenario = SCENARIOS.get(args.scenario)
    if args.bins is not None and "bins" not in scenario.run_settings:
        readers = scenario_settings()["bins"]
        raise GradleakError(f"--bins applies to --scenario {' or '.join(readers)}: drop it or add --scenario {readers[0]}")
    settings = {"bins": args.bins, "clients": None, "seed": args.seed, "local_steps": 1, "local_lr": 1e-4}
    if hasattr(scenario, "validate"):
        scenario.validate(settings)
    if hasattr(scenario, "server_model"):  # a server that modifies the model it sends
        shape = (spec.channels, spec.image_size, spec.image_size)
        server = scenario.from_run(settings, defenses=(), generator=None,
                                   context={"dataset": spec.name, "image_shape": shape, "device": torch.device("cpu")})
        model = server.server_model(model)
    return model


def _scenario_names() -> list[str]:
    from gradleak.scenarios import SCENARIOS

    return SCENARIOS.names()

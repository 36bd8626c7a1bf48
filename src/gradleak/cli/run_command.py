"""``gradleak run`` and the classic ``main.py``: the DLG reproduction flags, verbatim, plus
gradleak's additions (own models, captured updates, defenses, scenarios)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gradleak.cli.parsing import OneLineParser
from gradleak.errors import GradleakError

DEMO_INDEX = 3  # bundled CIFAR-100 test image used when `gradleak run` is given no data flags


def add_run_arguments(parser: argparse.ArgumentParser, *, classic: bool) -> None:
    """The classic DLG reproduction flags, verbatim, plus gradleak's additions."""
    from gradleak.attacks import ATTACKS
    from gradleak.data import DATASETS
    from gradleak.models import MODELS

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default=None, help=f"one of {', '.join(DATASETS.names())} (default cifar100)")
    data.add_argument("--index", type=int, default=None, help="index of the private sample (default 25; with --split test on a dataset with bundled images: 0)")
    data.add_argument("--indices", type=int, nargs="+", default=None, help="several indices: a batch")
    data.add_argument(
        "--image", nargs="+", default=None, metavar="PATH",
        help="your own image(s) instead of a dataset sample (shorter side resized to the dataset's input size, then centre-cropped to a square); several form a batch",
    )
    data.add_argument("--label", type=int, nargs="+", default=None, help="label(s) for --image (one per image)")
    data.add_argument("--num-classes", type=int, default=None, help="class count (default: the dataset's)")
    data.add_argument("--data-root", default="./data", help="where datasets live / are downloaded (default ./data)")
    data.add_argument("--split", choices=["train", "test", "extra"], default=None, help="dataset split (default train)")
    data.add_argument("--no-download", action="store_true", help="never download; fail if the data is absent")
    data.add_argument(
        "--tile-bundled", action="store_true",
        help="with --split test: indices 20.. are mirrored/shifted copies of the 20 bundled images (large batches offline)",
    )

    attack = parser.add_argument_group("attack")
    attack.add_argument("--iters", type=int, default=300, help="attack iterations (default 300)")
    attack.add_argument("--seed", type=int, default=1234, help="random seed (default 1234)")
    attack.add_argument(
        "--model", default=None,
        help=f"one of {', '.join(MODELS.names())} (default: fits the dataset), or your own: path/to/file.py:factory "
        "or package.module:factory, called as factory(num_classes, input_shape)",
    )
    attack.add_argument(
        "--weights", default=None, metavar="PATH",
        help="load the model's weights from a checkpoint (safetensors, or a torch.save state_dict read with "
             "weights_only=True; make one with gradleak train); default: a fresh initialisation",
    )
    attack.add_argument("--weights-sha256", default=None, metavar="HEX",
                        help="refuse --weights unless its sha256 is this (the sha256 is always recorded)")
    attack.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    attack.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1 for LeNets, else all cores)")
    attack.add_argument(
        "--attack", default=None,
        help=f"one of {', '.join(ATTACKS.names())} (default {'dlg, the original with its stall guard' if classic else _default_attack()})",
    )
    attack.add_argument(
        "--tv-weight", type=float, default=None, help="total-variation prior weight (default: the attack's, 0 for dlg)"
    )
    attack.add_argument(
        "--restarts", type=int, default=None,
        help="ig/auto: random restarts run as one batch (default 4; fewer is faster on deep models); "
        "dlg/idlg: most tries within --iters, a try judged stuck is restarted (default 8; 1 = the single-try original)",
    )
    attack.add_argument(
        "--early-stop", type=int, default=None, metavar="N",
        help="dlg/idlg: stop once the gradient distance has not fallen by 0.1%% of its best for N iterations "
        "(default 30; 0 = spend the whole --iters budget, as the original does)",
    )
    attack.add_argument(
        "--clamp", action="store_true", default=None,
        help="project pixels to [0,1] after every step (dlg: off by default, it hurts L-BFGS; ig always clamps)",
    )

    attack.add_argument(
        "--noise-source", choices=["auto", "published", "estimated"], default=None,
        help="map/auto on a defended update: where the server's noise model comes from: the defenses' "
        "published parameters, or estimated from the update's values (default auto: published when declared)",
    )

    client = parser.add_argument_group("client")
    client.add_argument(
        "--scenario", choices=_scenario_names(), default="fedsgd",
        help="what the client shares: fedsgd, fedavg, secagg (secure aggregation of --clients clients), "
        "imprint (a malicious server inserts an imprint block; default attack imprint)",
    )
    client.add_argument(
        "--clients", type=int, default=None,
        help="secagg/imprint: clients whose updates the server sees only summed; the batch is split evenly (default 2 for secagg)",
    )
    client.add_argument("--bins", type=int, default=None, help="imprint: bins of the server's imprint block (default 1024)")
    client.add_argument("--local-steps", type=int, default=1, help="FedAvg local steps E (default 1)")
    client.add_argument("--local-lr", type=float, default=1e-4, help="FedAvg local learning rate (default 1e-4)")
    client.add_argument(
        "--defense", action="append", default=[], metavar="SPEC",
        help=_defense_help(),
    )

    output = parser.add_argument_group("output")
    output.add_argument("--save-history", action="store_true", help="write history.png (snapshot every 10 iterations)")
    output.add_argument("--save-final", action="store_true", help="write recon.png / target.png")
    output.add_argument(
        "--save-model", action="store_true",
        help="write model.pt: the model the client received (the server's, with --scenario imprint); check it with gradleak inspect-model",
    )
    captured = parser.add_argument_group("captured update (no private data)")
    captured.add_argument(
        "--update", default=None, metavar="FILE",
        help="attack this captured update (a .safetensors file written by gradleak.save_update) with the server's "
        "--model; no dataset or simulated client",
    )
    captured.add_argument(
        "--reference", nargs="+", default=None, metavar="IMAGE",
        help="with --update: the private images, to score the reconstructions against (one per sample)",
    )
    output.add_argument("--out", default=None, help="output folder (default runs/<time>-<dataset>-<model>/)")
    output.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    output.add_argument("--quiet", action="store_true", help="no progress bar")


def _defense_help() -> str:
    from gradleak.defenses import defense_help

    return defense_help()


def _scenario_names() -> list[str]:
    from gradleak.scenarios import SCENARIOS

    return SCENARIOS.names()


def _default_attack() -> str:
    from gradleak.attacks import ATTACKS

    return "auto" if "auto" in ATTACKS else "idlg"


def config_from_args(args: argparse.Namespace, *, classic: bool) -> tuple[object, str | None]:
    """Turn parsed flags into a RunConfig; returns (config, note for the user or None)."""
    from gradleak.experiment import RunConfig

    note = None
    no_data_flags = args.dataset is None and args.index is None and args.indices is None and args.image is None
    if args.index is not None and args.indices is not None:
        raise GradleakError("give either --index or --indices, not both")
    split = args.split or "train"
    dataset = args.dataset or "cifar100"
    indices = args.indices if args.indices is not None else [args.index if args.index is not None else default_index(dataset, split)]
    if no_data_flags and not classic:
        # `gradleak run` with no data flags: an offline demo on a bundled real test image.
        indices, split = [DEMO_INDEX], "test"
        note = f"demo: bundled CIFAR-100 test image #{DEMO_INDEX} (choose data with --dataset/--index/--image)"
    if args.update is not None:
        data_flags = [f for f, v in (("--dataset", args.dataset), ("--index", args.index), ("--indices", args.indices),
                                     ("--image", args.image), ("--split", args.split)) if v is not None]
        if data_flags:
            raise GradleakError(
                f"--update attacks a captured update, which holds no private data: drop {data_flags[0]} "
                "(score against the private images with --reference IMAGES)"
            )
        no_data_flags, note = False, None
    elif args.reference is not None:
        raise GradleakError("--reference scores the attack on a captured update: give --update FILE (or drop --reference)")
    elif args.label is not None and args.image is None and args.indices is None and args.index is None:
        raise GradleakError("--label needs --image (or --index/--indices to override the dataset's labels)")
    config = RunConfig(
        dataset=dataset,
        indices=list(indices),
        images=list(args.image or []),
        labels=list(args.label or []),
        num_classes=args.num_classes,
        data_root=args.data_root,
        split=split,
        download=not args.no_download,
        iterations=args.iters,
        seed=args.seed,
        model=args.model,
        weights=args.weights,
        weights_sha256=args.weights_sha256,
        device=args.device,
        threads=args.threads,
        # A malicious server attacks with its own imprint block unless told otherwise.
        attack=args.attack or ("imprint" if args.scenario == "imprint" else "dlg" if classic else _default_attack()),
        tv_weight=args.tv_weight,
        clamp=args.clamp,
        restarts=args.restarts,
        early_stop=args.early_stop,
        scenario=args.scenario,
        local_steps=args.local_steps,
        local_lr=args.local_lr,
        clients=args.clients,
        bins=args.bins,
        tile_bundled=args.tile_bundled,
        defenses=list(args.defense),
        noise_source=args.noise_source,
        save_history=args.save_history,
        save_final=args.save_final,
        save_model=args.save_model,
        out=args.out,
        overwrite=args.overwrite,
        quiet=args.quiet,
        update=args.update,
        reference=list(args.reference or []),
    )
    return config, note


def default_index(dataset: str, split: str) -> int:
    """The classic script's index 25, except on a split whose first images are bundled (the test
    split of CIFAR-10/100, MNIST, Fashion-MNIST): 0, which runs offline.

    Example:
        >>> default_index("mnist", "test"), default_index("mnist", "train"), default_index("svhn", "test")
        (0, 25, 25)
    """
    from gradleak.data.bundled import BUNDLED_SPLIT, bundled_samples

    return 0 if split == BUNDLED_SPLIT and bundled_samples(dataset) else 25


def duplicate_note(items: Sequence[object], flag: str) -> str | None:
    """A note when a batch names the same sample more than once (kept: a batch may repeat one).

    Example:
        >>> duplicate_note([3, 5, 3, 3, 7, 5], "--indices")
        'note: --indices repeats 3 (3 times), 5 (2 times): the batch of 6 holds those images more than once; drop the repeats for distinct images'
        >>> duplicate_note([1, 2], "--indices") is None
        True
    """
    counts: dict[object, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    repeats = [f"{item} ({n} times)" for item, n in counts.items() if n > 1]
    if not repeats:
        return None
    return (f"note: {flag} repeats {', '.join(repeats)}: the batch of {len(items)} holds those images more than once; "
            "drop the repeats for distinct images")


def cmd_run(argv: Sequence[str], *, prog: str, classic: bool) -> int:
    from gradleak.experiment import prepare, execute

    parser = OneLineParser(prog=prog, description="Reconstruct private images from a shared gradient (DLG and successors).")
    add_run_arguments(parser, classic=classic)
    args = parser.parse_args(list(argv))
    config, note = config_from_args(args, classic=classic)
    if note and not config.quiet:  # type: ignore[attr-defined]
        print(note)
    if config.images and not config.labels and not config.quiet:  # type: ignore[attr-defined]
        print("note: no --label given: each --image is labelled 0 (pass --label N … to choose)")
    repeated = duplicate_note(config.images or config.indices, "--image" if config.images else "--indices")  # type: ignore[attr-defined]
    if repeated and not config.quiet:  # type: ignore[attr-defined]
        print(repeated)
    prepared = prepare(config)  # type: ignore[arg-type]
    if not config.quiet:  # type: ignore[attr-defined]
        if prepared.checkpoint is not None:
            print(f"weights: {prepared.checkpoint.path} ({prepared.checkpoint.describe()}; "
                  f"sha256 {prepared.checkpoint.sha256[:16]}…)")
        update = prepared.update
        source = (
            f"captured update {config.update}" if config.update  # type: ignore[attr-defined]
            else f"{config.dataset} {config.split} {'image(s) ' + ', '.join(config.images) if config.images else 'index ' + ' '.join(map(str, config.indices))}"  # type: ignore[attr-defined]
        )
        print(
            f"{config.attack} on {source}"  # type: ignore[attr-defined]
            f" | model {prepared.model_name} | {update.kind} of batch {update.batch_size} | device {prepared.device}"
        )
        if prepared.attack.name == "auto" and (":" in prepared.model_name or config.update):  # type: ignore[attr-defined]
            from gradleak.attacks.auto import describe

            # Your own model: say which attacks apply to it and why, before auto picks one.
            print("attacks for this model and update (+ applies, - does not):")
            print("\n".join("  " + line for line in describe(prepared.model, update).splitlines()))
    outcome = execute(prepared)
    m = outcome.metrics
    if "psnr" not in m:  # a captured update without --reference: nothing to score against
        print(f"reconstructed {m['batch_size']} sample(s) from {config.update}, labels {m['recovered_labels']} "  # type: ignore[attr-defined]
              f"(not scored: pass --reference IMAGES); {m['iterations']} iterations, {m['seconds']:.1f} s ({m['stop_reason']})")
        print(f"results in {outcome.out_dir}")
        return 0
    print(f"Final MSE={m['mse']:.6f} PSNR={m['psnr']:.2f} dB")  # the classic script's line, verbatim
    if "psnr_of_batch_mse" in m:
        print(f"PSNR above: mean of the per-image PSNRs; PSNR of the batch MSE: {m['psnr_of_batch_mse']:.2f} dB")
    if m["batch_size"] > 1:
        recovered = sum(1 for p in m["per_image"] if p["psnr"] >= 30.0)
        print(f"images >= 30 dB: {recovered}/{m['batch_size']}" + "".join(
            f" | client {c['client']}: {c['recovered']:.0%}" for c in m.get("per_client", [])
        ))
    print(
        f"SSIM={m['ssim']:.4f} " + (f"ST-LPIPS={m['st_lpips']:.4f} " if "st_lpips" in m else "") + "label accuracy="
        f"{'n/a (no --label)' if m['label_accuracy'] is None else format(m['label_accuracy'], '.0%')} iterations={m['iterations']} "
        f"attack {m['seconds']:.1f} s ({m['stop_reason']})"
    )
    print(f"results in {outcome.out_dir}")
    return 0


def cmd_gradleak_run(argv: Sequence[str]) -> int:
    return cmd_run(argv, prog="gradleak run", classic=False)

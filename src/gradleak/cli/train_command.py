"""``gradleak train``: train the client's model and write a checkpoint for ``--weights``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gradleak.cli.parsing import OneLineParser


def cmd_train(argv: Sequence[str]) -> int:
    from gradleak.training import DIGITS, OPTIMIZERS, TrainConfig

    defaults = TrainConfig()
    parser = OneLineParser(
        prog="gradleak train",
        description=(
            "Train the client's model (no defense) and save it as a checkpoint whose metadata (model, input "
            "shape, classes, dataset, epochs, test accuracy) lets `gradleak run --weights CKPT` check that it "
            "fits. Attack a trained model instead of a freshly initialised one."
        ),
    )
    parser.add_argument("--dataset", default=DIGITS,
                        help="digits (scikit-learn's bundled 8x8 digits upsampled to the model's input, 10 classes, "
                             "offline; default) or a gradleak dataset (its real train/test splits, on disk or downloaded)")
    parser.add_argument("--model", default=None, help="model (default: fits the dataset; lenetmnist for digits)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help=f"epochs (default {defaults.epochs})")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size,
                        help=f"minibatch size (default {defaults.batch_size})")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer, help="adam (default) or sgd (momentum 0.9)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-3 for adam, 0.1 for sgd)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed (default 0)")
    parser.add_argument("--train-size", type=int, default=0, help="train on a random subset of this size (0 = all)")
    parser.add_argument("--test-size", type=int, default=0, help="test on a random subset of this size (0 = all)")
    parser.add_argument("--data-root", default="./data", help="where gradleak datasets live (default ./data)")
    parser.add_argument("--no-download", action="store_true", help="never download a gradleak dataset")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=None, metavar="CKPT",
                        help="checkpoint file (default checkpoints/<dataset>-<model>-e<epochs>.safetensors; "
                             "*.pt/*.pth: a torch.save state_dict instead)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    args = parser.parse_args(list(argv))

    import torch

    from gradleak.errors import GradleakError
    from gradleak.models.checkpoint import check_writable, save_checkpoint
    from gradleak.training import check_train_config, digits_shape, train_model

    config = TrainConfig(
        dataset=args.dataset.strip().lower(), model=args.model, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, optimizer=args.optimizer, seed=args.seed, train_size=args.train_size, test_size=args.test_size,
        data_root=args.data_root, download=not args.no_download, device=args.device,
    )
    check_train_config(config)
    if args.threads is not None:
        if args.threads < 1:
            raise GradleakError(f"--threads must be at least 1 (got {args.threads})")
        torch.set_num_threads(args.threads)
    if args.out:
        out = Path(args.out)
    else:
        model = digits_shape(config.model)[0] if config.dataset == DIGITS else (config.model or "default")
        out = Path("checkpoints") / f"{config.dataset}-{model}-e{config.epochs}.safetensors"
    check_writable(out, overwrite=args.overwrite)  # before training, so no work is wasted

    def on_epoch(epoch: int, loss: float, accuracy: float) -> None:
        if not args.quiet:
            from tqdm import tqdm

            tqdm.write(f"  epoch {epoch}: train loss {loss:.4f}, test accuracy {accuracy:.1%}")

    result = train_model(config, progress=not args.quiet, on_epoch=on_epoch)
    meta = result.metadata
    digest = save_checkpoint(out, result.model, meta, overwrite=args.overwrite)
    print(f"model {meta['architecture']} ({meta['channels']}x{meta['image_size']}x{meta['image_size']}, "
          f"{meta['num_classes']} classes) on {meta['dataset']} ({meta['train_size']} train / {meta['test_size']} test), "
          f"{meta['epochs']} epoch(s), {result.seconds:.1f} s")
    print(f"test accuracy {result.accuracy:.1%}")
    print(f"checkpoint {out} (sha256 {digest})")
    print(f"attack it: gradleak run --weights {out} --dataset DATASET --split test --index 0")
    return 0

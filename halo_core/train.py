"""``python -m halo_core.train`` (and torchrun's ``-m halo_core.train``): the trainer's command line.
``halo train`` is the same parser; the training itself is ``halo_core.training.trainer.fit``."""

from __future__ import annotations

import argparse
import logging

from halo_core.config import config_args, load_config, parse_overrides

log = logging.getLogger(__name__)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m halo_core.train", description="Train a lens finder on a filtered dataset.",
                                add_help=add_help)
    config_args(p)
    p.add_argument("--data", required=True, help="filtered dataset directory (from `halo filter`)")
    p.add_argument("--out", required=True, help="directory for checkpoints and the final model.pt")
    p.add_argument("--no-resume", dest="resume", action="store_false", help="ignore an existing last.pt")
    p.add_argument("--warm-start-from", help="model.pt whose weights start a fresh run (config key warm_start)")
    return p


def train(cfg, args):
    """Run fit() for parsed arguments and log where the model went."""
    from halo_core.training.trainer import fit

    result = fit(cfg, args.data, args.out, resume=args.resume, warm_start_from=args.warm_start_from)
    log.info("model: %s (best epoch %d: %s; %.0f s)", result.model_path, result.best_epoch + 1, result.best.summary(),
             result.seconds)
    return result


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    train(load_config(args.preset, args.config, parse_overrides(args.set)), args)


if __name__ == "__main__":
    main()

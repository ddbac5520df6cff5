"""The ``stdyn`` command line (also ``python -m stdyn``): the top floor, nothing imports it.

::

    stdyn zoo --profile quick                                  # train or load the action zoo
    stdyn zoo --models i3d slowfast --worlds ssv2 --profile full --device cuda
    stdyn book 01 --profile smoke                              # the book runner (python -m stdyn.book)
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence


def zoo(argv: Sequence[str] | None = None) -> int:
    """Train (or load) models on worlds and print their accuracies, clean and per style."""
    from stdyn import experiments, models
    from stdyn.data import worlds
    from stdyn.training import profiles

    parser = argparse.ArgumentParser(prog="stdyn zoo", description=zoo.__doc__)
    parser.add_argument("--models", nargs="+", default=list(models.ACTION_MODELS),
                        help=f"default: {' '.join(models.ACTION_MODELS)}")
    parser.add_argument("--worlds", nargs="+", default=worlds.available(), help=f"default: {' '.join(worlds.available())}")
    parser.add_argument("--profile", default="quick", choices=profiles.NAMES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="default: the profile's")
    parser.add_argument("--no-styles", action="store_true", help="skip the accuracy on stylized clips")
    args = parser.parse_args(argv)
    for world in args.worlds:
        worlds.spec(world)  # unknown names fail before any training
    unknown = [name for name in args.models if name not in models.available()]
    if unknown:  # before any training, so that nothing is trained for a run that cannot finish
        parser.error(f"unknown model(s) {', '.join(unknown)}; available: {', '.join(models.available())}")
    table = experiments.zoo_accuracy(args.models, args.worlds, args.profile, seed=args.seed,
                                     styles=not args.no_styles, device=args.device)
    print(table.to_string(index=False, float_format="%.3f"))
    return 0


def book(argv: Sequence[str] | None = None) -> int:
    """Run chapters and build the site (see ``python -m stdyn.book --help``)."""
    from stdyn.book import runner

    return runner.main(argv)


COMMANDS = {"zoo": zoo, "book": book}


def main(argv: Sequence[str] | None = None) -> int:
    """``stdyn COMMAND [options]``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="stdyn", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=sorted(COMMANDS), help="; ".join(
        f"{name}: {command.__doc__.splitlines()[0]}" for name, command in sorted(COMMANDS.items())))
    parser.add_argument("options", nargs=argparse.REMAINDER, help="the command's own options (COMMAND --help)")
    args = parser.parse_args(argv)
    return COMMANDS[args.command](args.options)

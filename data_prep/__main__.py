"""``python -m data_prep``: prepare datasets on disk (run without arguments for help)."""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any


def _option(text: str) -> tuple[str, Any]:
    """Parse ``KEY=VALUE`` (VALUE as a number when it looks like one)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    for convert in (int, float):
        try:
            return key, convert(value)
        except ValueError:
            pass
    return key, value


def add_worlds_arguments(parser: argparse.ArgumentParser) -> None:
    from stdyn.data.worlds import SPLITS, available

    parser.add_argument("--list", action="store_true", help="list the worlds and what defines their labels, then exit")
    parser.add_argument("--name", action="append", choices=available(), metavar="WORLD",
                        help=f"world to render (repeatable; default: all of {', '.join(available())})")
    parser.add_argument("--split", choices=[*SPLITS, "both"], default="both", help="split to render (default: both)")
    parser.add_argument("--profile", help="take frames, size and clip counts (n_train / n_val) from this "
                        "stdyn.training.profiles profile (smoke, quick, full)")
    parser.add_argument("--n", type=int, help="clips per split (overrides the profile)")
    parser.add_argument("--frames", type=int, help="frames per clip (default 16 or the profile's)")
    parser.add_argument("--size", type=int, help="frame height = width in pixels (default 32 or the profile's)")
    parser.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    parser.add_argument("--long-tail", type=float, default=None,
                        help="Zipf exponent of the class frequencies (default: balanced)")
    parser.add_argument("--option", action="append", type=_option, default=[], metavar="KEY=VALUE",
                        help="a world's own option, e.g. --option cue_strength=0.6 for kinetics")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _world_jobs(args: argparse.Namespace) -> list[dict[str, Any]]:
    from stdyn.data.worlds import SPLITS, available

    frames, size, counts = args.frames, args.size, {}
    if args.profile:
        from stdyn.training import profiles

        profile = profiles.get(args.profile)
        frames, size = frames or profile.frames, size or profile.size
        counts = {"train": profile.n_train, "val": profile.n_val}
    elif args.n is None:
        raise SystemExit("data_prep worlds: give --n (clips per split) or --profile (smoke, quick, full)")
    splits = SPLITS if args.split == "both" else (args.split,)
    return [
        dict(name=name, split=split, n=args.n or counts[split], frames=frames or 16, size=size or 32,
             seed=args.seed, long_tail=args.long_tail, **dict(args.option))
        for name in args.name or available()
        for split in splits
    ]


def run_worlds(args: argparse.Namespace) -> int:
    """Render the requested worlds into the cache and print a summary table."""
    from stdyn.data import worlds
    from stdyn.data.cache import cache_dir

    if args.list:
        for name in worlds.available():
            print(f"{name}\n    " + worlds.describe(name).replace("\n", "\n    ") + "\n")
        return 0
    rows = []
    for job in _world_jobs(args):
        started = time.perf_counter()
        world = worlds.make(**job, cache=True, progress=not args.no_progress)
        size_mb = world.cache_path.stat().st_size / 2**20
        rows.append((job["name"], job["split"], len(world), f"{job['frames']}x{job['size']}x{job['size']}",
                     "cached" if world.from_cache else "rendered", time.perf_counter() - started, size_mb,
                     str(world.cache_path.with_suffix(".json"))))
    header = ("world", "split", "n", "clip", "status", "seconds", "MB", "manifest")
    widths = [max(len(header[i]), *(len(f"{r[i]:.1f}" if isinstance(r[i], float) else str(r[i])) for r in rows))
              for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        cells = [f"{c:.1f}" if isinstance(c, float) else str(c) for c in row]
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
    total = sum(row[6] for row in rows)
    print(f"{len(rows)} world split(s), {total:.1f} MB under {cache_dir('worlds')}")
    return 0


COMMANDS = {
    "worlds": ("render the synthetic worlds into the cache", add_worlds_arguments, run_worlds),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep",
        description="Prepare datasets on disk for stdyn.",
        epilog="examples:\n"
               "  python -m data_prep worlds --profile quick\n"
               "  python -m data_prep worlds --name ssv2 --split train --n 3000 --frames 16 --size 32\n"
               "  python -m data_prep worlds --list",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (summary, add_arguments, run) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        add_arguments(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a data_prep command; without one, print the help."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

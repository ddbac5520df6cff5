"""Wall time of ``stdyn.measure`` over bare forward passes on the same pairs (target <= 1.10).

Both sides see the same clips and pairs; the bare side gets its pairs built beforehand and only
runs the forward passes, so the ratio is everything ``measure`` adds: building pairs (stylising,
shuffling), hooks, pooling and the streaming statistics. Runs alternate to share machine noise.

    python bench/measure_overhead.py [--model r3d_18] [--clips 16] [--frames 8] [--size 64]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import stdyn
from stdyn import models
from stdyn.core.estimator import FACTORS
from stdyn.core.pairs import FramePairs
from stdyn.core.planted import moving_object_clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="r3d_18")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is least sensitive to a busy machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = models.create(args.model, num_classes=10).eval()
    layers = [stage.name for stage in model.stages]
    clips = moving_object_clips(args.clips, frames=args.frames, size=args.size, seed=0)
    builder = FramePairs()
    pack = getattr(model, "pack_input", None)
    batches = [(list(range(i, min(i + args.batch_size, args.clips))), clips[i : i + args.batch_size])
               for i in range(0, args.clips, args.batch_size)]
    prebuilt = [builder.make(batch, idx, factor, 0, pack) for idx, batch in batches for factor in FACTORS]

    def bare() -> None:
        with torch.inference_mode():
            for first, second in prebuilt:
                model(first)
                model(second)

    def measured() -> None:
        stdyn.measure(model, clips, layers, batch_size=args.batch_size, progress=False)

    bare()  # warm-up both paths
    measured()
    times = {"bare": [], "measure": []}
    for _ in range(args.repeats):
        for name, fn in (("bare", bare), ("measure", measured)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    bare_s, measure_s = statistics.median(times["bare"]), statistics.median(times["measure"])
    print(f"model {args.model}, {len(layers)} layers, {args.clips} clips of 3x{args.frames}x{args.size}x{args.size}, "
          f"{2 * 2 * args.clips} forward passes, torch threads {torch.get_num_threads()}")
    print(f"bare forward passes: {bare_s:.3f} s (median of {args.repeats})")
    print(f"stdyn.measure:       {measure_s:.3f} s (median of {args.repeats})")
    print(f"ratio measure / bare = {measure_s / bare_s:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()

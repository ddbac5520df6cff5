"""Peak memory of ``stdyn.measure`` at N and 10N clips (target ratio <= 1.05).

Each size runs in a fresh process whose clips are rendered lazily, one at a time, so that
nothing but the measurement itself could grow with N. The script prints each run's peak
resident memory and, separately, its growth over the resident memory just before measuring.

    python bench/memory_scaling.py [--clips 64] [--model i3d]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

CHILD = """
import json, resource, sys, torch
import stdyn
from stdyn import models
from stdyn.core.planted import moving_object_clips

class LazyClips(torch.utils.data.Dataset):
    def __init__(self, n): self.n = n
    def __len__(self): return self.n
    def __getitem__(self, i): return moving_object_clips(1, frames=8, size=32, seed=i)[0]

n, name = int(sys.argv[1]), sys.argv[2]
torch.set_num_threads(1)
torch.manual_seed(0)
model = models.create(name, num_classes=10)
stdyn.measure(model, LazyClips(4), batch_size=4, progress=False)  # warm-up: allocator, kernels
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = stdyn.measure(model, LazyClips(n), batch_size=8, bootstrap=50, progress=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"n": n, "before_kib": before, "peak_kib": peak, "pairs": result.layerwise(result.layers[-1]).n_pairs}))
"""


def run(n: int, model: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), model], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--model", default="i3d")
    args = parser.parse_args()
    small, large = run(args.clips, args.model), run(10 * args.clips, args.model)
    for r in (small, large):
        print(f"N={r['n']:>5} clips: peak RSS {r['peak_kib'] / 1024:.1f} MiB, growth while measuring "
              f"{(r['peak_kib'] - r['before_kib']) / 1024:.1f} MiB, pairs {r['pairs']}")
    print(f"peak-memory ratio 10N / N = {large['peak_kib'] / small['peak_kib']:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()

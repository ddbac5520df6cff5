"""Training-step time of StaticDropout over standard dropout on the same model (target <= 1.15).

Both sides train the same model from the same weights on the same batches with the same ``p``:
one with ``nn.Dropout(p)`` before the classifier, the other with ``StaticDropoutCallback(p)``
active, so its scores are re-estimated every ``every`` steps (two extra forward passes in eval
mode) and channels are drawn from their softmax. A block of ``every`` steps holds exactly one
re-estimation; blocks alternate between the two sides to share machine noise, and the ratio is
the median over paired blocks.

    python bench/static_dropout_overhead.py [--depth 18] [--frames 16] [--size 32] [--batch-size 32] [--device cuda]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from stdyn import models
from stdyn.interventions import StaticDropoutCallback
from stdyn.training import TrainConfig, TrainState


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="slowonly")
    parser.add_argument("--depth", type=int, default=18)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--p", type=float, default=0.3)
    parser.add_argument("--every", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    num_classes = 10
    generator = torch.Generator().manual_seed(0)
    clips = torch.rand(args.batch_size, 3, args.frames, args.size, args.size, generator=generator)
    labels = torch.randint(0, num_classes, (args.batch_size,), generator=generator)
    clips, labels = clips.to(device), labels.to(device)
    base = models.create(args.model, num_classes, seed=0, depth=args.depth).to(device)
    config = TrainConfig(epochs=1, batch_size=args.batch_size, lr=1e-3, device=str(device))
    criterion = nn.CrossEntropyLoss()

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def trainer(static: bool):
        model = copy.deepcopy(base).train()
        callback = StaticDropoutCallback(args.p, every=args.every) if static else None
        if static:
            model.head.dropout = nn.Identity()
        else:
            model.head.dropout = nn.Dropout(args.p)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
        state = TrainState(model, optimizer, config, epoch=0, step=0, phase="train", lr=config.lr)
        if callback is not None:
            callback.on_fit_start(state)

        def block() -> float:
            synchronize()
            start = time.perf_counter()
            for _ in range(args.every):
                if callback is not None:
                    callback.on_step(state, clips, labels)
                loss = criterion(model(models.prepare_input(model, clips)), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                state.step += 1
            synchronize()
            return time.perf_counter() - start

        return block, callback

    standard, _ = trainer(static=False)
    static, callback = trainer(static=True)
    standard(), static()  # warm-up
    times: dict[str, list[float]] = {"standard": [], "static": []}
    for _ in range(args.repeats):
        times["standard"].append(standard())
        times["static"].append(static())
    ratios = [s / d for s, d in zip(times["static"], times["standard"])]
    step = {name: statistics.median(values) / args.every for name, values in times.items()}
    print(f"{args.model} depth {args.depth}, batch {args.batch_size} x 3x{args.frames}x{args.size}x{args.size}, "
          f"p={args.p}, scores re-estimated every {args.every} steps ({callback.refreshes} times in all), "
          f"torch threads {torch.get_num_threads()}, device {device}")
    print(f"nn.Dropout step:    {1000 * step['standard']:.1f} ms (median of {args.repeats} blocks of {args.every})")
    print(f"StaticDropout step: {1000 * step['static']:.1f} ms")
    print(f"ratio StaticDropout / nn.Dropout = {statistics.median(ratios):.3f} "
          f"(median of paired blocks; target <= 1.15)")


if __name__ == "__main__":
    main()

"""Step time against the size of the cell: linear in the number of (edge, primitive) pairs.

Cells of N = 2..8 intermediate nodes h1..hN between an input x and an output y, all of width
``--width``: an edge from every earlier node (x, h1, ...) into every hj, and hN -> y, every edge
carrying linear, tanh, relu, identity and zero (5 (N (N + 1) / 2 + 1) pairs); a Categorical
likelihood over ``--width`` classes.  For every cell, in one process and interleaved
(``benchmarks/timing.py``): the bnas-pyro ``InnerLoop.step`` with ``MeanFieldGuide`` and the
lean hand-written Bayesian step of ``benchmarks/baselines.py``; all cells take part in the same
interleaved rounds, so that a drift of the machine's speed during the run does not bend the
line.  Prints per cell the step times, ``ratio bnas/lean`` (target <= 1.2 at every size) and
the bytes autograd saves for the backward pass (the step's activation memory) of both; then the
least-squares line of bnas time against the number of pairs with its R^2 (target >= 0.98), and
the process's peak memory.

    python benchmarks/scaling.py
    python benchmarks/scaling.py --device cuda
    python benchmarks/scaling.py --nodes 2,4,8 --rounds 3     # quicker
"""

from __future__ import annotations

import argparse

import torch

from baselines import LeanBayesStep
from step_overhead import bnas_step
from timing import clock_for, interleaved, median, peak_memory, ratio, resolve_device, saved_for_backward

from bnas_pyro import SearchSpace

PRIMS = ["linear", "tanh", "relu", "identity", "zero"]
NUM_DATA = 2048
TARGET_RATIO, TARGET_R2 = 1.2, 0.98


def cell(nodes: int, width: int):
    names = ["x"] + [f"h{j}" for j in range(1, nodes + 1)] + ["y"]
    sizes = {n: width for n in names}
    edges = [(names[i], names[j], PRIMS) for j in range(1, nodes + 1) for i in range(j)]
    edges.append((names[nodes], "y", PRIMS))
    return sizes, edges


def fit_line(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    intercept = my - slope * mx
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return slope, intercept, 1.0 - ss_res / ss_tot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--nodes", default="2,3,4,5,6,7,8")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--block", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--clock", choices=["cpu", "wall"], default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    if device is None:
        return
    args.clock = clock_for(device, args.clock)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.width, generator=gen).to(device, dtype)
    y = torch.randint(0, args.width, (args.batch,), generator=gen).to(device)
    print(f"cells of width {args.width}, primitives {PRIMS}, batch {args.batch}, device {device}, "
          f"{args.dtype}, {args.threads} thread(s), clock {args.clock}")
    print(f"{'nodes':>5} {'edges':>5} {'pairs':>5} {'weights':>8} {'bnas ms':>8} {'lean ms':>8} "
          f"{'ratio bnas/lean':>16} {'saved MiB bnas/lean':>20}")
    # every cell built first and all timed in one interleaved run, so that a drift of the
    # machine's speed over the run hits every cell alike (the straight line compares cells)
    cells, steps = [], {}
    for n in [int(v) for v in args.nodes.split(",")]:
        sizes, edges = cell(n, args.width)
        space = SearchSpace(sizes, edges, input="x", output="y")
        ours, ours_loss = bnas_step(space, device, dtype, NUM_DATA)
        lean = LeanBayesStep(sizes, edges, NUM_DATA, device=device, dtype=dtype)
        cells.append((n, edges, ours_loss, lean))
        steps[f"bnas {n}"] = (lambda ours=ours: ours(x, y))
        steps[f"lean {n}"] = (lambda lean=lean: lean.step(x, y))
    t = interleaved(steps, device, rounds=args.rounds, block=args.block, warmup=args.warmup,
                    clock=args.clock)
    pairs, times, worst = [], [], 0.0
    for n, edges, ours_loss, lean in cells:
        r = ratio(t, f"bnas {n}", f"lean {n}")
        worst = max(worst, r)
        s_b = saved_for_backward(lambda: ours_loss(x, y))
        s_l = saved_for_backward(lambda: lean.loss(x, y))
        k = len(edges) * len(PRIMS)
        pairs.append(k)
        times.append(median(t[f"bnas {n}"]))
        print(f"{n:>5} {len(edges):>5} {k:>5} {lean.cell.num_parameters:>8} "
              f"{median(t[f'bnas {n}']) * 1e3:>8.3f} {median(t[f'lean {n}']) * 1e3:>8.3f} "
              f"{r:>16.2f} {s_b / 2**20:>10.2f}/{s_l / 2**20:.2f}")
    slope, intercept, r2 = fit_line(pairs, times)
    print(f"least squares: bnas step = {intercept * 1e3:.3f} ms + {slope * 1e6:.2f} us x pairs, "
          f"R^2 = {r2:.4f} (target >= {TARGET_R2}): {'OK' if r2 >= TARGET_R2 else 'BELOW TARGET'}")
    print(f"worst ratio bnas/lean: {worst:.2f} (target <= {TARGET_RATIO}): "
          f"{'OK' if worst <= TARGET_RATIO else 'ABOVE TARGET'}")
    print(f"peak memory: {peak_memory(device)}")


if __name__ == "__main__":
    main()

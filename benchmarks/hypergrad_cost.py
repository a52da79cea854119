"""Cost of one outer step of each hypergradient method, relative to eta plain inner steps.

For every strategy (METHOD.md section 5) a search is built on the same problem, from the same
initial state, with the same inner operator (eta steps of plain gradient ascent, SGD, step lr).
In the same run, interleaved so that drifts in machine load hit both alike, it times

    baseline:  search.run_inner_steps(eta)          (eta plain SVI steps on theta)
    method:    search.strategy.outer_step(search)   (eta inner steps + the hypergradient + step on h)

and prints the median over the repeats of the ratio method / baseline (each ratio from one
adjacent pair; quartiles in brackets), in CPU time of this (single-threaded) process, so
that other processes on a shared machine do not distort the ratio.  Problems: ``supernet`` (default; x in R^8 ->
32 hidden -> 1, primitives {linear, tanh} on both edges plus a {linear, zero} skip, 256 points,
mean-field guide) and ``linear`` (the 12-feature ARD regression of
``examples/hypergradient_comparison.py``).

    python benchmarks/hypergrad_cost.py
    python benchmarks/hypergrad_cost.py --problem linear --eta 50
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bnas_pyro import BilevelSearch, Coefficients, SearchSpace
from bnas_pyro.guides import MeanFieldGuide
from bnas_pyro.models import BayesianSupernet, NormalLikelihood

METHODS = ["joint", "greedy", "drmad", "hoag", "unrolled", "random"]


def supernet_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = torch.tanh(x[:, 0] - 0.5 * x[:, 1]) + 0.1 * torch.randn(256, generator=g)
    space = SearchSpace({"x": 8, "h": 32, "y": 1},
                        [("x", "h", ["linear", "tanh"]), ("h", "y", ["linear", "tanh"]),
                         ("x", "y", ["linear", "zero"])])

    def build():
        model = BayesianSupernet(space, likelihood=NormalLikelihood(precision=10.0))
        guide = MeanFieldGuide(model, generator=torch.Generator().manual_seed(1))
        return model, guide

    return build, x, y, 1e-4


def linear_problem():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
    import hypergradient_comparison as hc

    problem = hc.make_problem(0)
    return (lambda: hc.build(problem)), problem.x, problem.y, 5e-5


def cpu_time(fn) -> float:
    """CPU seconds of this process spent in ``fn()`` (one thread: insensitive to other load)."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", choices=["supernet", "linear"], default="supernet")
    parser.add_argument("--eta", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--methods", nargs="*", default=METHODS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    build, x, y, lr = {"supernet": supernet_problem, "linear": linear_problem}[args.problem]()

    rows = []
    for method in args.methods:
        model, guide = build()
        search = BilevelSearch(model, guide, Coefficients(), hypergradient=method,
                               inner_steps=args.eta, outer_steps=1, lr=lr, inner_optimizer="sgd",
                               hyper_lr=1e-3, progress=False, seed=0)
        search.prepare(x, y)
        search.strategy.outer_step(search)  # warm-up (and random search's initial snapshot)
        search.run_inner_steps(args.eta)
        base, outer = [], []
        for _ in range(args.repeats):  # interleaved
            base.append(cpu_time(lambda: search.run_inner_steps(args.eta)))
            outer.append(cpu_time(lambda: search.strategy.outer_step(search)))
        ratios = sorted(o / b for o, b in zip(outer, base))
        q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
        rows.append((method, statistics.median(outer), statistics.median(base),
                     statistics.median(ratios), q1, q3))

    num_params = sum(p.numel() for p in guide.parameters())
    print(f"problem {args.problem}: |theta| = {num_params}, {x.shape[0]} points, eta = {args.eta}, "
          f"{args.repeats} interleaved repeats, threads {torch.get_num_threads()}")
    print(f"{'method':10s} {'outer step':>12s} {'eta plain steps':>16s} {'ratio':>7s}  "
          f"{'(quartiles)':>13s}   CPU time, medians")
    for method, o, b, r, q1, q3 in rows:
        print(f"{method:10s} {o * 1e3:9.1f} ms {b * 1e3:13.1f} ms {r:7.2f}  ({q1:.2f}, {q3:.2f})")


if __name__ == "__main__":
    main()

"""One SVI step of MeanFieldGuide on a digits-sized supernet vs a hand-written PyTorch step.

Network: 64 inputs, two hidden nodes of 64, 10 classes, 3 primitives per edge, batch 256.
The baseline is the same reparameterised ELBO written directly in PyTorch (Normal weights with the
analytic Gaussian KL, log-space Concrete structure with its Monte Carlo KL, Categorical likelihood
scaled to the full data), one tensor per (edge, primitive) parameter and one Adam step.
Both are timed in the same run: median of ``--steps`` steps after ``--warmup`` warm-up steps.
Prints the ratio ours / baseline (target: at most 1.5).

    python benchmarks/step_overhead.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical
from torch.nn.functional import softplus

from bnas_pyro import Coefficients, InnerLoop, SearchSpace
from bnas_pyro.guides import MeanFieldGuide
from bnas_pyro.models import BayesianSupernet

PRIMS = ["linear", "tanh", "relu"]
EDGES = [("x", "h1"), ("h1", "h2"), ("x", "h2"), ("h2", "y")]
SIZES = {"x": 64, "h1": 64, "h2": 64, "y": 10}
ACT = {"linear": lambda z: z, "tanh": torch.tanh, "relu": torch.relu}


def make_space() -> SearchSpace:
    return SearchSpace(SIZES, [(s, t, PRIMS) for s, t in EDGES])


class HandWritten(torch.nn.Module):
    """The same ELBO written by hand: what a PyTorch user would write without Pyro."""

    def __init__(self, num_data: int):
        super().__init__()
        self.num_data = num_data
        self.mu, self.rho = torch.nn.ParameterDict(), torch.nn.ParameterDict()
        for s, t in EDGES:
            for p in PRIMS:
                for name, shape in ((f"{s}_{t}_{p}_w", (SIZES[s], SIZES[t])), (f"{s}_{t}_{p}_b", (SIZES[t],))):
                    self.mu[name] = torch.nn.Parameter(torch.randn(shape) / SIZES[s] ** 0.5)
                    self.rho[name] = torch.nn.Parameter(torch.full(shape, -4.6))
        self.q_logits = torch.nn.ParameterDict({f"{s}_{t}": torch.nn.Parameter(torch.zeros(3)) for s, t in EDGES})
        self.log_A = torch.nn.ParameterDict({f"{s}_{t}_{p}": torch.nn.Parameter(torch.zeros(())) for s, t in EDGES for p in PRIMS})
        self.p_logits = torch.nn.ParameterDict({f"{s}_{t}": torch.nn.Parameter(torch.zeros(3)) for s, t in EDGES})

    def loss(self, x, y, temperature=1.0):
        kl = 0.0
        gammas = {}
        t = torch.tensor(temperature)
        for s, tgt in EDGES:
            q = ExpRelaxedCategorical(t, logits=self.q_logits[f"{s}_{tgt}"])
            p = ExpRelaxedCategorical(t, logits=self.p_logits[f"{s}_{tgt}"])
            lg = q.rsample()
            kl = kl + q.log_prob(lg) - p.log_prob(lg)
            gammas[(s, tgt)] = lg.exp()
        values = {"x": x}
        for node in ("h1", "h2", "y"):
            total = 0.0
            for s, tgt in EDGES:
                if tgt != node:
                    continue
                for l, p in enumerate(PRIMS):
                    ws = []
                    for suffix in ("w", "b"):
                        key = f"{s}_{tgt}_{p}_{suffix}"
                        mu, sd = self.mu[key], softplus(self.rho[key])
                        a = self.log_A[f"{s}_{tgt}_{p}"].exp()
                        ws.append(mu + sd * torch.randn_like(mu))
                        kl = kl + 0.5 * (a * (sd**2 + mu**2) - 1 - a.log() - 2 * sd.log()).sum()
                    total = total + gammas[(s, tgt)][l] * ACT[p](values[s] @ ws[0] + ws[1])
            values[node] = total
        ll = -torch.nn.functional.cross_entropy(values["y"], y, reduction="sum") * (self.num_data / x.shape[0])
        return -(ll - kl)


def time_steps(step, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    num_data = 1437
    x = torch.randn(args.batch, 64)
    y = torch.randint(0, 10, (args.batch,))

    model = BayesianSupernet(make_space())
    guide = MeanFieldGuide(model)
    loop = InnerLoop(model, guide, Coefficients(), lr=1e-3)
    ours = lambda: loop.step(x, y, num_data)  # noqa: E731

    hand = HandWritten(num_data)
    opt = torch.optim.Adam(list(hand.mu.parameters()) + list(hand.rho.parameters()) + list(hand.q_logits.parameters()), lr=1e-3)

    def baseline():
        opt.zero_grad(set_to_none=True)
        hand.loss(x, y).backward()
        opt.step()

    # interleave the two measurements so drift in machine load affects both alike
    t_base, t_ours = [], []
    for _ in range(3):
        t_base.append(time_steps(baseline, args.warmup, args.steps // 3))
        t_ours.append(time_steps(ours, args.warmup, args.steps // 3))
    base, mine = statistics.median(t_base), statistics.median(t_ours)
    print(f"parameters: {model.layout.num_parameters}, batch {args.batch}, threads {torch.get_num_threads()}")
    print(f"hand-written PyTorch step: {base * 1e3:.3f} ms (median)")
    print(f"bnas-pyro MeanFieldGuide step: {mine * 1e3:.3f} ms (median)")
    print(f"ratio ours / baseline: {mine / base:.2f}  (target <= 1.5)")


if __name__ == "__main__":
    main()

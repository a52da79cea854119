"""The seed's polynomial example: choose the degree of a polynomial by evidence (METHOD.md section 6).

Data: 40 points, x ~ U(-2, 2), y = x^3 - x + N(0, 0.5^2).  One edge x -> y whose primitives are the
polynomials of degree 0..5 (``{"name": "poly", "degree": d}``, d + 1 weights each), the plain
prior with one precision A per degree, a learned noise precision beta, a mean-field guide,
Concrete structure at c_temp = 1.  Evidence mode (c_reg = c_train = c_prior = 1, c_comb = 0), so
the ``joint`` strategy solves the bilevel problem exactly (METHOD.md section 4): ELBO maximisation
over q(W, Gamma), A, m and beta, 6000 Adam steps with a step size decaying from 0.02 to 0.002.
Each search runs two restarts, one plain and one with a structure warm-up (see
:func:`build_search`), and keeps the one with the best final ELBO (:func:`bnas_pyro.run_restarts`;
METHOD.md section 3).

The answer to compare with: the degree whose Bayesian linear regression has the highest evidence
p(y | X, A*, beta*) with its own type-II maximum-likelihood (A*, beta*) (closed form,
``tests/closed_form.py``).

Run:  .venv/bin/python examples/polynomial_degree.py [--seeds 10] [--restarts 2]
It prints, per seed, the closed-form best degree, the found degree, q(degree) and every restart's
ELBO, then the number of seeds where the two agree.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bnas_pyro import BilevelSearch, Coefficients, SearchSpace, run_restarts
from bnas_pyro.guides import MeanFieldGuide
from bnas_pyro.models import BayesianSupernet, NormalLikelihood
from bnas_pyro.restarts import RestartReport

DEGREES = tuple(range(6))
EDGE = "x->y"


def make_data(seed: int, m: int = 40) -> tuple[Tensor, Tensor]:
    """x ~ U(-2, 2), y = x^3 - x + N(0, 0.5^2); shapes (m, 1) and (m,)."""
    g = torch.Generator().manual_seed(20_000 + seed)
    x = torch.rand(m, 1, generator=g) * 4 - 2
    y = (x**3 - x).squeeze(-1) + 0.5 * torch.randn(m, generator=g)
    return x, y


def make_space() -> SearchSpace:
    return SearchSpace({"x": 1, "y": 1}, [("x", "y", [{"name": "poly", "degree": d} for d in DEGREES])])


class GeometricLR:
    """A search callback: both step sizes stay at ``start`` for the first ``begin`` fraction of the
    run, then decay geometrically to ``end`` (the ELBOs of the ill-conditioned high degrees, x^5
    reaching 32 on [-2, 2], only converge with a decaying step size; the final ELBOs are what the
    restarts are compared by)."""

    def __init__(self, start: float, end: float, begin: float = 0.0):
        self.start, self.end, self.begin = float(start), float(end), float(begin)

    def __call__(self, search: BilevelSearch, record) -> None:
        p = (record.step + 1) / max(search.outer_steps, 1)
        p = max(p - self.begin, 0.0) / (1.0 - self.begin)
        lr = self.start * (self.end / self.start) ** p
        for optimizer in (search.inner_optimizer, search.hyper_optimizer):
            for group in optimizer.param_groups:
                group["lr"] = lr


class StructureWarmup:
    """A search callback: q(Gamma)'s logits stay at 0 (uniform) for the first ``fraction`` of the
    outer steps, so that every degree's weights are fitted before q(Gamma) starts to choose."""

    def __init__(self, fraction: float):
        self.fraction = float(fraction)

    def __call__(self, search: BilevelSearch, record) -> None:
        logits = search.guide.structure.logits
        frozen = (record.step + 1) < self.fraction * search.outer_steps
        if frozen:
            with torch.no_grad():
                logits.zero_()
        logits.requires_grad_(not frozen)


def build_search(seed: int, *, steps: int = 6000, c_temp: float = 1.0, lr: float = 0.02,
                 final_lr: float = 0.002, num_particles: int = 2,
                 warmups: tuple[float, ...] = (0.0, 0.5)) -> BilevelSearch:
    """A fresh model, mean-field guide and evidence-mode search for one restart.

    ``seed`` sets the initialisation (means ~ N(0, 0.1^2): the default Glorot-like scale, 1 for a
    scalar input, starts the x^5 term at outputs of size ~30 and q(Gamma) drops the high degrees
    before they fit) and the warm-up, ``warmups[seed % len(warmups)]``.  Why two kinds of restart:
    with the plain prior and q(W) independent of Gamma, the weights' KL does not depend on Gamma,
    so the gradient on q(Gamma) compares the degrees by their likelihood at the current weights;
    the Occam factor of the evidence only acts once the weights of the unused degrees have relaxed
    to the prior.  Without a warm-up, the degree that fits fastest (3 here) is chosen; after a
    warm-up in which all degrees are fitted, the most flexible one (5).  Each converges to the
    ELBO of its degree, and the final ELBOs decide between them (METHOD.md section 3).
    """
    torch.manual_seed(seed)
    model = BayesianSupernet(make_space(), likelihood=NormalLikelihood(precision=1.0, learn=True))
    init_loc = 0.1 * torch.randn(model.layout.num_parameters,
                                 generator=torch.Generator().manual_seed(seed))
    guide = MeanFieldGuide(model, init_scale=0.05, init_loc=init_loc)
    warmup = warmups[seed % len(warmups)]
    callbacks = [GeometricLR(lr, final_lr, begin=warmup)]
    if warmup > 0:
        callbacks.append(StructureWarmup(warmup))
    return BilevelSearch(model, guide, Coefficients(c_temp=c_temp), "joint", inner_steps=10,
                         outer_steps=max(steps // 10, 1), lr=lr, hyper_lr=lr,
                         num_particles=num_particles, seed=seed, progress=False,
                         callbacks=callbacks)


def search_degree(seed: int, restarts: int = 2, steps: int = 6000, processes: int = 1,
                  **options) -> RestartReport:
    """Search seed ``seed``'s data; restart r is ``build_search(1000 * seed + r)``."""
    x, y = make_data(seed)
    build = functools.partial(build_search, steps=steps, **options)
    return run_restarts(build, x, y, num_restarts=restarts, seed=1000 * seed, processes=processes,
                        elbo_particles=500)


def found_degree(report: RestartReport) -> int:
    label = report.best.structure[EDGE]
    return DEGREES[report.best.space.edges[0].labels.index(label)]


def closed_form_evidences(x: Tensor, y: Tensor) -> list[float]:
    """log p(y | X, A*, beta*) per degree, (A*, beta*) its type-II ML (tests/closed_form.py).

    MacKay's fixed point diverges (A -> infinity, NaN) when the ML intercept of degree 0 is ~0;
    the evidence is then maximised numerically over (log A, log beta) with the same formula.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from closed_form import log_evidence, type2_ml
    from scipy.optimize import minimize

    xs, ys = x.double().numpy()[:, 0], y.double().numpy()
    out = []
    for d in DEGREES:
        phi = np.vander(xs, d + 1, increasing=True)
        with np.errstate(all="ignore"):
            value = type2_ml(phi, ys)[2]
        if not np.isfinite(value):
            res = minimize(lambda t: -log_evidence(phi, ys, np.exp(t[0]), np.exp(t[1])),
                           [0.0, 0.0], method="Nelder-Mead",
                           options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000})
            value = -float(res.fun)
        out.append(float(value))
    return out


def closed_form_best(seed: int) -> tuple[int, list[float]]:
    """(the degree of highest closed-form evidence, log evidence per degree) for seed's data."""
    evidences = closed_form_evidences(*make_data(seed))
    return int(np.argmax(evidences)), evidences


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    agree = 0
    for seed in range(args.seeds):
        best, evidences = closed_form_best(seed)
        report = search_degree(seed, args.restarts, args.steps, args.processes)
        d = found_degree(report)
        agree += d == best
        probs = report.best.edge_probabilities()[EDGE]
        elbos = ", ".join(f"{r.elbo:.2f}" for r in report.records)
        print(f"seed {seed}: closed-form best degree {best} (log evidence "
              + " ".join(f"{e:.1f}" for e in evidences) + f"); found {d} "
              f"(q = {' '.join(f'{p:.2f}' for p in probs)}); restart ELBOs {elbos}", flush=True)
    print(f"found the closed-form best degree in {agree}/{args.seeds} seeds "
          f"({args.restarts} restart(s) per seed, kept by final ELBO)")


if __name__ == "__main__":
    main()

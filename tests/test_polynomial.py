"""The seed's polynomial example (METHOD.md section 6; examples/polynomial_degree.py).

The answer is not made up: for each seed's data, the degree whose Bayesian linear regression has
the highest evidence with its own type-II ML (A, beta), from tests/closed_form.py.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import polynomial_degree as example  # noqa: E402
from closed_form import log_evidence, mean_field_optimum  # noqa: E402


def test_closed_form_answers_are_maxima_of_the_evidence():
    """The oracle itself: each degree's value is the maximum over (A, beta) of the closed form
    (also where MacKay's fixed point diverges: degree 0 with an intercept near 0)."""
    x, y = example.make_data(2)
    xs, ys = x.double().numpy()[:, 0], y.double().numpy()
    values = example.closed_form_evidences(x, y)
    for d, value in enumerate(values):
        phi = np.vander(xs, d + 1, increasing=True)
        grid = max(log_evidence(phi, ys, np.exp(a), np.exp(b))
                   for a in np.linspace(-6, 6, 61) for b in np.linspace(-3, 3, 61))
        assert np.isfinite(value) and value >= grid - 1e-6 and value - grid < 0.1, (d, value, grid)


def test_mean_field_ceiling():
    """What a mean-field q(W) can reach: for each seed, the degree with the highest *optimal
    mean-field ELBO* (maximised over A and beta, closed form) against the degree with the highest
    evidence.  They differ in seeds 5 and 8 (in seed 5 the evidence of degrees 4 and 3 differ by
    0.04 nats), and in seed 2 the mean-field optimum of degrees 5 and 3 differ by 0.02 nats: a
    converged mean-field search can agree with the evidence in at most 8 of these 10 seeds."""
    from scipy.optimize import minimize

    agree = []
    for seed in range(10):
        x, y = example.make_data(seed)
        xs, ys = x.double().numpy()[:, 0], y.double().numpy()
        best_mf = []
        for d in example.DEGREES:
            phi = np.vander(xs, d + 1, increasing=True)
            res = minimize(lambda t: -mean_field_optimum(phi, ys, np.exp(t[0]), np.exp(t[1])),
                           [0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-8})
            best_mf.append(-res.fun)
        agree.append(int(np.argmax(best_mf)) == example.closed_form_best(seed)[0])
    assert [s for s in range(10) if not agree[s]] == [5, 8]


def test_search_finds_the_evidence_degree_reduced():
    """One seed, the plain restart only, 1500 steps (the full version is slow)."""
    torch.set_num_threads(1)
    best, _ = example.closed_form_best(0)
    report = example.search_degree(0, restarts=1, steps=1500)
    assert example.found_degree(report) == best == 3
    assert report.best.structure_probability > 0.9


@pytest.mark.slow
def test_polynomial_reproduction():
    """`make reproduce`: 10 seeds, new data and initialisation each, 2 restarts kept by ELBO."""
    torch.set_num_threads(1)
    agree = []
    for seed in range(10):
        best, evidences = example.closed_form_best(seed)
        report = example.search_degree(seed, restarts=2)
        found = example.found_degree(report)
        agree.append(found == best)
        print(f"seed {seed}: closed form {best} ({' '.join(f'{e:.2f}' for e in evidences)}), "
              f"found {found}; restarts: "
              + "; ".join(f"{r.structure['x->y']} ELBO {r.elbo:.2f}" for r in report.records),
              flush=True)
    print(f"agreement: {sum(agree)}/10")
    assert sum(agree) >= 8, f"{sum(agree)}/10"

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


@pytest.mark.parametrize("basis", example.BASES)
def test_closed_form_answers_are_maxima_of_the_evidence(basis):
    """The oracle itself: each degree's value is the maximum over (A, beta) of the closed form
    (also where MacKay's fixed point diverges: degree 0 with an intercept near 0)."""
    x, y = example.make_data(2)
    xs, ys = x.double().numpy()[:, 0], y.double().numpy()
    values = example.closed_form_evidences(x, y, basis=basis)
    for d, value in enumerate(values):
        phi = example.design_matrix(xs, d, basis)
        grid = max(log_evidence(phi, ys, np.exp(a), np.exp(b))
                   for a in np.linspace(-6, 6, 61) for b in np.linspace(-3, 3, 61))
        assert np.isfinite(value) and value >= grid - 1e-6 and value - grid < 0.1, (d, value, grid)


@pytest.mark.parametrize("basis", example.BASES)
def test_the_oracle_and_the_search_use_the_same_features(basis):
    """The closed form's Phi (numpy) is what the search's primitive of each degree computes."""
    from bnas_pyro.models import BayesianSupernet

    model = BayesianSupernet(example.make_space(basis)).double()
    x = torch.linspace(-2, 2, 17, dtype=torch.float64)[:, None]
    for d, prim in enumerate(model.space.primitive_instances[0]):
        w = torch.randn(d + 1, dtype=torch.float64)
        params = {"bias": w[:1]} | ({"weight": w[1:, None]} if d else {})
        ours = prim(x, params)[:, 0].numpy()
        assert np.allclose(ours, example.design_matrix(x.numpy()[:, 0], d, basis) @ w.numpy(),
                           atol=1e-10)


def _best_mean_field_degrees(basis):
    from scipy.optimize import minimize

    out = []
    for seed in range(10):
        x, y = example.make_data(seed)
        xs, ys = x.double().numpy()[:, 0], y.double().numpy()
        best_mf = []
        for d in example.DEGREES:
            phi = example.design_matrix(xs, d, basis)
            res = minimize(lambda t: -mean_field_optimum(phi, ys, np.exp(t[0]), np.exp(t[1])),
                           [0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-8})
            best_mf.append(-res.fun)
        out.append(int(np.argmax(best_mf)))
    return out


def test_mean_field_ceiling():
    """What a mean-field q(W) can reach: for each seed, the degree with the highest *optimal
    mean-field ELBO* (maximised over A and beta, closed form) against the degree with the highest
    evidence.

    Monomial basis: they differ in seeds 5 and 8 (in seed 5 the evidence of degrees 4 and 3 differ
    by 0.04 nats), and in seed 2 the mean-field optimum of degrees 5 and 3 differ by 0.02 nats: a
    converged mean-field search can agree with the evidence in at most 8 of these 10 seeds, and the
    evidence itself prefers degree 5 to the true 3 in 4 seeds.  Legendre basis (the example's
    default): they agree in all 10 seeds, and the evidence picks the true degree 3 in all but
    seed 5 (degree 4)."""
    monomial = [example.closed_form_best(s, "monomial")[0] for s in range(10)]
    assert [s for s, (a, b) in enumerate(zip(monomial, _best_mean_field_degrees("monomial")))
            if a != b] == [5, 8]
    assert monomial.count(5) == 4
    legendre = [example.closed_form_best(s, "legendre")[0] for s in range(10)]
    assert _best_mean_field_degrees("legendre") == legendre
    assert legendre == [3, 3, 3, 3, 3, 4, 3, 3, 3, 3]


def test_search_finds_the_evidence_degree_reduced():
    """One seed, the warm-up restart only, 3000 steps (the full version is slow).  Seed 2 is one
    where the restart without a warm-up ends at degree 4; the warm-up restart must find 3, the
    degree of highest closed-form evidence, and its ELBO must come within 1.5 nats of it."""
    torch.set_num_threads(1)
    best, evidences = example.closed_form_best(2)
    report = example.search_degree(2, restarts=1, steps=3000)
    assert example.found_degree(report) == best == 3
    assert report.best.structure_probability > 0.9
    assert report.records[0].elbo > evidences[3] - 1.5, (report.records[0].elbo, evidences[3])


@pytest.mark.slow
def test_polynomial_reproduction():
    """`make reproduce`: 10 seeds, new data and initialisation each, 2 restarts kept by ELBO
    (one with a structure warm-up, one without), Legendre basis.  Measured: 9 of 10 (seed 5's
    evidence prefers degree 4 to 3 by 0.28 nats; both restarts ended elsewhere)."""
    torch.set_num_threads(1)
    agree = []
    for seed in range(10):
        best, evidences = example.closed_form_best(seed)
        report = example.search_degree(seed, restarts=2, processes=2)
        found = example.found_degree(report)
        agree.append(found == best)
        print(f"seed {seed}: closed form {best} ({' '.join(f'{e:.2f}' for e in evidences)}), "
              f"found {found}; restarts: "
              + "; ".join(f"{r.structure['x->y']} ELBO {r.elbo:.2f}" for r in report.records),
              flush=True)
    print(f"agreement: {sum(agree)}/10")
    assert sum(agree) >= 8, f"{sum(agree)}/10"

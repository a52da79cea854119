"""The source talk's polynomial example (METHOD.md section 6; examples/polynomial_degree.py).

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
    # one prior precision A per degree, shared by its d + 1 weights, as in the closed form
    assert model.hyper.log_precision.shape == (len(example.DEGREES),)
    for d in example.DEGREES:
        slots = model.layout.slots_of(0, d)
        assert set(model.layout.group_index[slots[0].start:slots[-1].stop].tolist()) == {d}
    x = torch.linspace(-2, 2, 17, dtype=torch.float64)[:, None]
    for d, prim in enumerate(model.space.primitive_instances[0]):
        w = torch.randn(d + 1, dtype=torch.float64)
        params = {"bias": w[:1]} | ({"weight": w[1:, None]} if d else {})
        ours = prim(x, params)[:, 0].numpy()
        assert np.allclose(ours, example.design_matrix(x.numpy()[:, 0], d, basis) @ w.numpy(),
                           atol=1e-10)


def _mean_field_optima(basis):
    """The optimal mean-field ELBO of every degree and seed, maximised over (log A, log beta) by
    Nelder-Mead from several starts (one start can stop short on the ill-conditioned monomials)."""
    from scipy.optimize import minimize

    starts = [(0.0, 0.0), (-3.0, 1.0), (3.0, 1.0), (0.0, 2.0)]
    out = []
    for seed in range(10):
        x, y = example.make_data(seed)
        xs, ys = x.double().numpy()[:, 0], y.double().numpy()
        row = []
        for d in example.DEGREES:
            phi = example.design_matrix(xs, d, basis)
            row.append(max(-minimize(lambda t: -mean_field_optimum(phi, ys, np.exp(t[0]), np.exp(t[1])),
                                     start, method="Nelder-Mead",
                                     options={"xatol": 1e-6, "fatol": 1e-8}).fun
                           for start in starts))
        out.append(row)
    return np.array(out)


def test_mean_field_ceiling():
    """What a mean-field q(W) can reach: for each seed, the degree with the highest *optimal
    mean-field ELBO* (maximised over A and beta, closed form) against the degree with the highest
    evidence.

    Monomial basis: they differ in seeds 5 and 8 (in seed 5 the evidence of degrees 4 and 3 differ
    by 0.04 nats), and in seed 2 the mean-field optimum of degrees 5 and 3 differ by 0.02 nats: a
    converged mean-field search can agree with the evidence in at most 8 of these 10 seeds, and the
    evidence itself prefers degree 5 to the true 3 in 4 seeds.  Legendre basis (the example's
    default): they agree in all 10 seeds, every degree's mean-field optimum is within 0.9 nats of
    its evidence, and the evidence picks the true degree 3 in all but seed 5 (degree 4)."""
    monomial = [example.closed_form_best(s, "monomial")[0] for s in range(10)]
    mf_monomial = _mean_field_optima("monomial").argmax(1)
    assert [s for s in range(10) if monomial[s] != mf_monomial[s]] == [5, 8]
    assert monomial.count(5) == 4
    evidences = np.array([example.closed_form_best(s, "legendre")[1] for s in range(10)])
    mf = _mean_field_optima("legendre")
    assert list(mf.argmax(1)) == list(evidences.argmax(1)) == [3, 3, 3, 3, 3, 4, 3, 3, 3, 3]
    gap = evidences - mf
    assert gap.min() > -1e-6 and gap.max() < 0.9, gap.max()


def test_search_finds_the_evidence_degree_reduced():
    """One seed, the warm-up restart only, 3000 steps (the full version is slow).  Seed 2 is one
    where the restart without a warm-up ends at degree 4; the warm-up restart must find 3, the
    degree of highest closed-form evidence, and its ELBO must come within 1.5 nats of it."""
    torch.set_num_threads(1)
    best, evidences = example.closed_form_best(2)
    report = example.search_degree(2, restarts=1, steps=3000)
    assert example.found_degree(report) == best == 3
    assert report.best.structure_probability > 0.9
    record = report.records[0]
    # a lower bound of that degree's evidence, and close to it (a lost KL term would add ~10 nats)
    assert evidences[3] - 1.5 < record.elbo < evidences[3] + 3 * record.elbo_se + 0.3, \
        (record.elbo, record.elbo_se, evidences[3])


@pytest.mark.slow
def test_polynomial_reproduction():
    """`make reproduce`: 10 seeds, new data and initialisation each, 2 restarts kept by ELBO
    (one with a structure warm-up, one without), Legendre basis.  Measured: 9 of 10 (seed 5's
    evidence prefers degree 4 to 3 by 0.28 nats; both restarts ended elsewhere)."""
    torch.set_num_threads(1)
    agree, gaps = [], []
    labels = example.make_space().edges[0].labels
    for seed in range(10):
        best, evidences = example.closed_form_best(seed)
        report = example.search_degree(seed, restarts=2, processes=2)
        found = example.found_degree(report)
        agree.append(found == best)
        parts = []
        for r in report.records:
            degree = labels.index(r.structure[example.EDGE])
            # every restart's ELBO follows the evidence of the degree it ended at
            gaps.append((evidences[degree] - r.elbo, r.elbo_se, seed, degree))
            parts.append(f"degree {degree} ELBO {r.elbo:.2f} +- {r.elbo_se:.2f} "
                         f"(evidence - ELBO {evidences[degree] - r.elbo:.2f})")
        print(f"seed {seed}: closed form {best} ({' '.join(f'{e:.2f}' for e in evidences)}), "
              f"found {found}; restarts: " + "; ".join(parts), flush=True)
    print(f"agreement: {sum(agree)}/10")
    assert sum(agree) >= 8, f"{sum(agree)}/10"
    for gap, se, seed, degree in gaps:
        assert -(3 * se + 0.3) < gap < 1.5, (seed, degree, gap, se)

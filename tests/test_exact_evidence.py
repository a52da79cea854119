"""The optimised ELBO against closed-form Bayesian linear regression (METHOD.md section 3)."""

import numpy as np
import pytest
import torch
from closed_form import log_evidence, mean_field_optimum

from bnas_pyro import Coefficients, SearchSpace, estimate_elbo, fit
from bnas_pyro.guides import FullRankGuide, MeanFieldGuide
from bnas_pyro.models import BayesianSupernet, NormalLikelihood

A, BETA = 1.0, 4.0


@pytest.fixture(scope="module")
def correlated_data():
    rng = np.random.default_rng(1)
    n, d = 40, 4
    cov = 0.9 * np.ones((d, d)) + 0.1 * np.eye(d)
    X = rng.standard_normal((n, d)) @ np.linalg.cholesky(cov).T
    y = X @ np.array([1.0, -0.5, 0.3, 0.0]) + 0.7 + rng.standard_normal(n) / np.sqrt(BETA)
    phi = np.hstack([X, np.ones((n, 1))])  # the linear primitive's weight and bias
    return X, y, phi


def linear_model():
    space = SearchSpace({"x": 4, "y": 1}, [("x", "y", ["linear"])])
    return BayesianSupernet(space, likelihood=NormalLikelihood(precision=BETA),
                            init_log_precision=np.log(A)).double()


def optimise(guide_cls, X, y):
    model = linear_model()
    guide = guide_cls(model, init_scale=0.1).double()
    x_t, y_t = torch.tensor(X), torch.tensor(y)
    loop = fit(model, guide, x_t, y_t, num_steps=2500, lr=0.02, num_particles=4, progress=False)
    for group in loop.optimizer.param_groups:  # anneal the step to settle the Monte Carlo jitter
        group["lr"] = 0.002
    loop.run(x_t, y_t, num_steps=1500, progress=False)
    return estimate_elbo(model, guide, x_t, y_t, num_particles=4000)


def test_problem_separates_mean_field_from_evidence(correlated_data):
    X, y, phi = correlated_data
    assert log_evidence(phi, y, A, BETA) - mean_field_optimum(phi, y, A, BETA) > 2.0


def test_full_rank_elbo_reaches_log_evidence(correlated_data):
    X, y, phi = correlated_data
    elbo, se = optimise(FullRankGuide, X, y)
    exact = log_evidence(phi, y, A, BETA)
    print(f"\nFullRankGuide ELBO {elbo:.3f} +- {se:.3f}; closed-form log evidence {exact:.3f}")
    assert se < 0.1
    assert abs(elbo - exact) < 0.5, (elbo, exact)


def test_mean_field_elbo_reaches_its_closed_form_optimum(correlated_data):
    X, y, phi = correlated_data
    elbo, se = optimise(MeanFieldGuide, X, y)
    optimum = mean_field_optimum(phi, y, A, BETA)
    print(f"\nMeanFieldGuide ELBO {elbo:.3f} +- {se:.3f}; closed-form mean-field optimum {optimum:.3f}")
    assert se < 0.1
    assert abs(elbo - optimum) < 0.5, (elbo, optimum)
    assert elbo < log_evidence(phi, y, A, BETA) - 1.0

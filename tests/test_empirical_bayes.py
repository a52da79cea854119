"""Joint ELBO maximisation over (q, A, beta) recovers scikit-learn's BayesianRidge."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes
from sklearn.linear_model import BayesianRidge

from bnas_pyro import SearchSpace, estimate_elbo, fit
from bnas_pyro.guides import FullRankGuide
from bnas_pyro.models import BayesianSupernet, NormalLikelihood


@pytest.fixture(scope="module")
def diabetes():
    X, y = load_diabetes(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    y = (y - y.mean()) / y.std()
    return X, y


def test_evidence_maximisation_matches_bayesian_ridge(diabetes):
    X, y = diabetes
    reference = BayesianRidge(compute_score=True, fit_intercept=True, max_iter=1000, tol=1e-10).fit(X, y)

    space = SearchSpace({"x": 10, "y": 1}, [("x", "y", [{"name": "linear", "bias": False}])])
    model = BayesianSupernet(space, likelihood=NormalLikelihood(precision=1.0, learn=True),
                             precision="shared").double()
    guide = FullRankGuide(model, init_scale=0.05).double()
    x_t, y_t = torch.tensor(X), torch.tensor(y)
    loop = fit(model, guide, x_t, y_t, num_steps=3000, lr=0.02, train_hyperparameters=True,
               num_particles=4, progress=False)
    for group in loop.optimizer.param_groups:
        group["lr"] = 0.002
    loop.run(x_t, y_t, num_steps=1500, progress=False)

    lam = float(model.hyper.log_precision.exp().detach())
    alpha = float(model.hyper.noise_precision().detach())
    assert abs(lam / reference.lambda_ - 1) < 0.10, (lam, reference.lambda_)
    assert abs(alpha / reference.alpha_ - 1) < 0.10, (alpha, reference.alpha_)
    elbo, se = estimate_elbo(model, guide, x_t, y_t, num_particles=4000)
    print(f"\nlambda {lam:.4f} (sklearn {reference.lambda_:.4f}), alpha {alpha:.4f} "
          f"(sklearn {reference.alpha_:.4f}), ELBO {elbo:.3f} +- {se:.3f} "
          f"(sklearn log marginal likelihood {reference.scores_[-1]:.3f})")
    assert se < 0.2
    assert abs(elbo - reference.scores_[-1]) < 1.0, (elbo, reference.scores_[-1])

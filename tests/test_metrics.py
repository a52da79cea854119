"""Accuracy, NLL, ECE and RMSE against hand computations; the posterior predictive of a model
whose posterior is a point mass equals the plain network's softmax."""

import math

import pytest
import torch

from bnas_pyro import SearchSpace
from bnas_pyro.analysis.metrics import (classification_metrics, evaluate_bayesian, evaluate_network,
                                        expected_calibration_error, posterior_predictive,
                                        regression_metrics)
from bnas_pyro.guides import DeltaGuide
from bnas_pyro.models import BayesianSupernet, NormalLikelihood


def test_classification_metrics_by_hand():
    probs = torch.tensor([[0.95, 0.05], [0.65, 0.35], [0.25, 0.75], [0.15, 0.85]])
    y = torch.tensor([0, 1, 1, 1])
    m = classification_metrics(probs, y, n_bins=10)
    assert m["accuracy"] == 0.75
    assert math.isclose(m["nll"], -(math.log(0.95) + math.log(0.35) + math.log(0.75)
                                    + math.log(0.85)) / 4, rel_tol=1e-6)
    # confidences 0.95, 0.65, 0.75, 0.85 sit in four bins with accuracies 1, 0, 1, 1
    assert math.isclose(m["ece"], (0.05 + 0.65 + 0.25 + 0.15) / 4, rel_tol=1e-6)
    # one bin: |mean accuracy - mean confidence| = |0.75 - 0.8|
    assert math.isclose(expected_calibration_error(probs, y, n_bins=1), 0.05, rel_tol=1e-6)


def test_ece_is_small_for_calibrated_and_large_for_overconfident_predictions():
    g = torch.Generator().manual_seed(0)
    n = 20000
    conf = 0.5 + 0.5 * torch.rand(n, generator=g)
    correct = torch.rand(n, generator=g) < conf
    y = torch.where(correct, 0, 1)
    probs = torch.stack([conf, 1 - conf], -1)
    assert expected_calibration_error(probs, y) < 0.02
    sharp = torch.stack([torch.full((n,), 0.99), torch.full((n,), 0.01)], -1)
    # accuracy about 0.75 at confidence 0.99
    assert abs(expected_calibration_error(sharp, y) - (0.99 - float(correct.float().mean()))) < 1e-6


def test_regression_metrics_in_original_units():
    mean, y = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    lp = torch.distributions.Normal(mean, 0.5).log_prob(y)
    m = regression_metrics(mean, y, lp, y_std=10.0)
    assert math.isclose(m["rmse"], 10 * math.sqrt(5 / 3), rel_tol=1e-6)
    # NLL of y_orig = 10 y: the density picks up the Jacobian 1/10
    assert math.isclose(m["nll"], float(-lp.mean()) + math.log(10.0), rel_tol=1e-6)


def _point_mass_model(task: str):
    space = SearchSpace({"x": 3, "y": 4 if task == "classification" else 1}, [("x", "y", ["linear"])])
    likelihood = None if task == "classification" else NormalLikelihood(precision=4.0)
    model = BayesianSupernet(space, likelihood=likelihood)
    guide = DeltaGuide(model, generator=torch.Generator().manual_seed(1))
    W = guide.loc.detach()[:12].view(3, 4) if task == "classification" else guide.loc.detach()[:3].view(3, 1)
    b = guide.loc.detach()[12:] if task == "classification" else guide.loc.detach()[3:]
    return model, guide, W, b


def test_posterior_predictive_of_a_point_mass_is_the_network():
    model, guide, W, b = _point_mass_model("classification")
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(50, 3, generator=g), torch.randint(0, 4, (50,), generator=g)
    pred = posterior_predictive(model, guide, x, y, num_draws=3, batch_size=16)  # chunked
    ref = torch.softmax(x @ W + b, -1)
    assert torch.allclose(pred.probs, ref, atol=1e-6)
    assert pred.log_lik.shape == (3, 50)
    assert torch.allclose(pred.log_predictive, ref.gather(-1, y[:, None]).squeeze(-1).log().double(),
                          atol=1e-5)
    m = evaluate_bayesian(model, guide, x, y, "classification", num_draws=2)
    ref_m = classification_metrics(ref, y)
    assert m["accuracy"] == ref_m["accuracy"]
    assert math.isclose(m["nll"], ref_m["nll"], rel_tol=1e-5)


def test_regression_predictive_and_plain_network():
    model, guide, W, b = _point_mass_model("regression")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 3, generator=g)
    y = (x @ W + b).squeeze(-1) + 0.5 * torch.randn(40, generator=g)
    m = evaluate_bayesian(model, guide, x, y, "regression", num_draws=2, y_std=2.0)
    resid = y - (x @ W + b).squeeze(-1)
    assert math.isclose(m["rmse"], 2.0 * float(resid.pow(2).mean().sqrt()), rel_tol=1e-5)
    ref_nll = float(-torch.distributions.Normal(0.0, 0.5).log_prob(resid).mean()) + math.log(2.0)
    assert math.isclose(m["nll"], ref_nll, rel_tol=1e-5)
    net = torch.nn.Linear(3, 1)
    with torch.no_grad():
        net.weight.copy_(W.T)
        net.bias.copy_(b)
    plain = evaluate_network(net, x, y, "regression", noise_std=0.5, y_std=2.0)
    assert math.isclose(plain["rmse"], m["rmse"], rel_tol=1e-5)
    assert math.isclose(plain["nll"], m["nll"], rel_tol=1e-5)
    with pytest.raises(ValueError):
        expected_calibration_error(torch.ones(2, 2) / 2, torch.zeros(2, dtype=torch.long), n_bins=0)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_structured_guide_predictive_is_the_exact_mixture_of_the_model_over_structures(
        task, monkeypatch):
    """A joint q(s) predicts sum_s q(s) p(y | x, W, s) per weight draw.  With q(W) collapsed to
    its mean, each structure's term is the Pyro path's prediction with q(s) one-hot on it, so
    the mixture equals sum_s q(s) (Pyro path at s), to rounding (the rows in pieces of 7, as
    a large support's memory bound splits them)."""
    from bnas_pyro.guides import StructuredGuide, structured
    from bnas_pyro.models import CategoricalLikelihood

    monkeypatch.setattr(structured, "_MIXTURE_ROWS", 12 * 7)

    g = torch.Generator().manual_seed(4)
    out = 3 if task == "classification" else 1
    space = SearchSpace({"x": 2, "h": 3, "y": out},
                        [("x", "h", ["linear", "tanh", "zero"]), ("h", "y", ["linear", "relu"]),
                         ("x", "y", ["linear", "zero"])])
    likelihood = CategoricalLikelihood() if task == "classification" else NormalLikelihood(4.0)
    model = BayesianSupernet(space, likelihood=likelihood).double()
    guide = StructuredGuide(model, structure="joint", generator=g).double()
    x = torch.randn(30, 2, generator=g, dtype=torch.float64)
    y = (torch.randint(0, 3, (30,), generator=g) if task == "classification"
         else torch.randn(30, generator=g, dtype=torch.float64))
    with torch.no_grad():
        guide.scale_unconstrained.fill_(-60.0)            # W = the mean, to rounding
        guide.loc.copy_(torch.randn(guide.loc.shape, generator=g, dtype=torch.float64))
        logits = torch.randn(guide.structure.logits.shape, generator=g, dtype=torch.float64)
        guide.structure.logits.copy_(logits)
    q = torch.softmax(logits, -1)
    assert q.shape == (12,)
    mixed = posterior_predictive(model, guide, x, y, num_draws=2, batch_size=16)
    per_s = []

    def pyro_path(*args):            # the guide as a plain Pyro guide, without the mixture hook
        return guide(*args)

    for s in range(q.shape[0]):      # one structure at a time, q(s) one-hot on it
        with torch.no_grad():
            guide.structure.logits.fill_(-1e4)
            guide.structure.logits[s] = 0.0
        per_s.append(posterior_predictive(model, pyro_path, x, y, num_draws=1))
    field = "probs" if task == "classification" else "mean"
    expect = sum(w * getattr(p, field) for w, p in zip(q, per_s))
    torch.testing.assert_close(getattr(mixed, field), expect, rtol=1e-10, atol=1e-12)
    lik = torch.logsumexp(torch.stack([w.log() + p.log_lik[0] for w, p in zip(q, per_s)]), 0)
    torch.testing.assert_close(mixed.log_lik, lik.expand(2, -1), rtol=1e-10, atol=1e-10)
    if task == "regression":
        second = sum(w * (p.variance + p.mean**2) for w, p in zip(q, per_s))
        torch.testing.assert_close(mixed.variance, second - expect**2, rtol=1e-9, atol=1e-10)

"""The Concrete structure prior: density formula and a zero Monte Carlo KL (METHOD.md section 2)."""

import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine

from bnas_pyro import SearchSpace
from bnas_pyro.guides import MeanFieldGuide
from bnas_pyro.models import BayesianSupernet, concrete, concrete_log_density, structure_site


def thesis_density(gamma: np.ndarray, s: np.ndarray, t: float) -> float:
    """p(gamma|s,t) = (K-1)! t^(K-1) prod_l[s_l gamma_l^(-t-1)] (sum_l s_l gamma_l^(-t))^(-K), in float64."""
    K = len(gamma)
    return (math.factorial(K - 1) * t ** (K - 1) * np.prod(s * gamma ** (-t - 1))
            * np.sum(s * gamma ** (-t)) ** (-K))


def space():
    return SearchSpace({"x": 3, "y": 2}, [("x", "y", ["linear", "tanh", "relu", "constant"])])


@pytest.mark.parametrize("seed", range(5))
def test_model_structure_density_matches_the_thesis_formula(seed):
    rng = np.random.default_rng(seed)
    model = BayesianSupernet(space()).double()
    site = structure_site("x->y")
    for t in (0.3, 1.0, 2.5):
        model.temperature = t
        with torch.no_grad():
            model.hyper.structure_logits.copy_(torch.tensor(rng.normal(size=4)))
        gamma = rng.dirichlet(np.ones(4))
        log_gamma = torch.tensor(np.log(gamma))
        conditioned = poutine.condition(model, data={site: log_gamma})
        trace = poutine.trace(conditioned).get_trace(torch.zeros(1, 3, dtype=torch.float64))
        # the site holds log gamma; the simplex density adds the Jacobian -sum(log gamma)
        simplex_log_density = float((trace.nodes[site]["fn"].log_prob(log_gamma) - log_gamma.sum()).detach())
        s = np.exp(model.hyper.structure_logits.detach().numpy())
        expected = math.log(thesis_density(gamma, s, t))
        assert abs(simplex_log_density - expected) < 1e-4, (t, simplex_log_density, expected)
        direct = float(concrete_log_density(log_gamma, model.hyper.structure_logits.detach(), t))
        assert abs(direct - expected) < 1e-4, (t, direct, expected)


def test_density_is_finite_at_low_temperature_in_float32():
    d = concrete(torch.tensor([0.3, -1.0, 2.0]), 0.02)
    x = d.rsample((2000,))
    assert torch.isfinite(d.log_prob(x)).all()


def test_monte_carlo_kl_of_q_equal_to_p_is_zero_within_its_standard_error():
    model = BayesianSupernet(space())
    model.temperature = 0.5
    logits = torch.tensor([0.5, -0.3, 1.2, 0.0])
    with torch.no_grad():
        model.hyper.structure_logits.copy_(logits)
    guide = MeanFieldGuide(model, init_logits=logits)  # q(Gamma) = p(Gamma)
    site = structure_site("x->y")
    draws = []
    for _ in range(1000):
        g = poutine.trace(guide).get_trace(torch.zeros(1, 3))
        m = poutine.trace(poutine.replay(model, trace=g)).get_trace(torch.zeros(1, 3))
        v = g.nodes[site]["value"]
        with torch.no_grad():
            draws.append(float(g.nodes[site]["fn"].log_prob(v) - m.nodes[site]["fn"].log_prob(v)))
    draws = np.array(draws)
    se = draws.std() / np.sqrt(len(draws))
    assert abs(draws.mean()) < 3 * se + 1e-6
    assert draws.std() < 1e-4  # q and p are the same distribution, so every draw is exactly 0


def test_monte_carlo_kl_detects_a_different_q():
    p = concrete(torch.zeros(3), 0.5)
    q = concrete(torch.tensor([2.0, 0.0, -2.0]), 0.5)
    x = q.rsample((20000,))
    kl = (q.log_prob(x) - p.log_prob(x))
    assert kl.mean() > 10 * kl.std() / math.sqrt(len(kl))


def test_pyro_sample_site_is_reparameterised():
    model = BayesianSupernet(space())
    guide = MeanFieldGuide(model)
    tr = poutine.trace(guide).get_trace(torch.zeros(1, 3))
    assert tr.nodes[structure_site("x->y")]["fn"].has_rsample
    assert pyro.__version__ >= "1.9"

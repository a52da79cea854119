"""The objectives: scaling and masking, the coupled KL, joint's h-gradient, the c_comb targets."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from bnas_pyro import BilevelSearch, Coefficients, ScaledELBO, SearchSpace, StructureDistribution, trace_terms
from bnas_pyro.distributions import StructureScaledNormal
from bnas_pyro.guides import MeanFieldGuide
from bnas_pyro.models import BayesianSupernet, NormalLikelihood


def regression(num_prims=("linear", "tanh")):
    space = SearchSpace({"x": 2, "y": 1}, [("x", "y", list(num_prims))])
    return BayesianSupernet(space, likelihood=NormalLikelihood(precision=2.0)).double()


def test_minibatch_log_likelihood_is_scaled_to_the_full_data():
    model = regression(("linear",))
    guide = MeanFieldGuide(model).double()
    x, y = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    torch.manual_seed(1)
    full = trace_terms(model, guide, x, y, 8)
    torch.manual_seed(1)
    scaled = trace_terms(model, guide, x, y, 80)
    assert torch.allclose(scaled.log_likelihood, 10 * full.log_likelihood)
    assert torch.allclose(scaled.kl, full.kl)


def test_masked_observations_do_not_count():
    model = regression(("linear",))
    guide = MeanFieldGuide(model).double()
    x, y = torch.randn(6, 2, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    mask = torch.tensor([True, False, True, False, True, True])
    torch.manual_seed(2)
    masked = trace_terms(poutine.mask(model, mask=mask), guide, x, y)
    torch.manual_seed(2)
    kept = trace_terms(model, guide, x[mask], y[mask])
    assert torch.allclose(masked.log_likelihood, kept.log_likelihood)


@pytest.mark.parametrize("log_gamma", [0.0, -1.3, 0.4])
def test_coupled_kl_equals_the_gaussian_kl_it_stands_for(log_gamma):
    loc, scale, prior_scale = torch.tensor([0.3, -1.2]), torch.tensor([0.5, 0.2]), torch.tensor([1.5, 0.7])
    lg = torch.full((2,), log_gamma)
    q = StructureScaledNormal(loc, scale, lg)
    p = StructureScaledNormal(torch.zeros(2), prior_scale, lg)
    g = math.exp(log_gamma)
    expected = torch.distributions.kl_divergence(
        dist.Normal(g * loc, g * scale).to_event(1), dist.Normal(torch.zeros(2), g * prior_scale).to_event(1))
    assert torch.allclose(torch.distributions.kl_divergence(q, p), expected, atol=1e-6)
    # gamma cancels: the KL of the standardised weights, finite even when gamma underflows
    tiny = StructureScaledNormal(loc, scale, torch.full((2,), -200.0))
    tiny_p = StructureScaledNormal(torch.zeros(2), prior_scale, torch.full((2,), -200.0))
    standard = torch.distributions.kl_divergence(dist.Normal(loc, scale).to_event(1),
                                                 dist.Normal(torch.zeros(2), prior_scale).to_event(1))
    assert torch.allclose(torch.distributions.kl_divergence(tiny, tiny_p), standard, atol=1e-5)


def test_scaled_elbo_is_an_elbo_module_over_model_and_guide_parameters():
    model = regression()
    guide = MeanFieldGuide(model).double()
    x, y = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    module = ScaledELBO(Coefficients(c_reg=3.0))(model, guide)
    names = {n for n, _ in module.named_parameters()}
    assert "model.hyper.log_precision" in names and "guide.loc" in names
    torch.manual_seed(3)
    loss = module(x, y)
    torch.manual_seed(3)
    terms = trace_terms(model, guide, x, y)
    assert torch.allclose(loss, -(terms.log_likelihood - 3.0 * terms.kl))


def test_joint_moves_h_along_the_partial_gradient_of_q_not_of_l():
    """With c_prior = 0 (and no hyperprior) Q does not depend on A directly: joint keeps A fixed,
    while the inner problem (c_reg = 1) still regularises theta."""
    model = regression()
    guide = MeanFieldGuide(model).double()
    x = torch.randn(30, 2, dtype=torch.float64)
    y = x[:, 0] - x[:, 1]
    before = model.hyper.log_precision.detach().clone()
    search = BilevelSearch(model, guide, Coefficients(c_prior=0.0), "joint", inner_steps=5,
                           outer_steps=4, progress=False)
    search.run(x, y)
    assert torch.equal(model.hyper.log_precision.detach(), before)
    evidence = BilevelSearch(model, guide, Coefficients(), "joint", inner_steps=5, outer_steps=4,
                             progress=False)
    evidence.run(x, y)
    assert not torch.equal(model.hyper.log_precision.detach(), before)


def test_comb_targets_are_checked_against_the_space():
    model = regression()
    guide = MeanFieldGuide(model).double()
    with pytest.raises(ValueError, match="edge 'x->z'"):
        BilevelSearch(model, guide, comb_targets=[StructureDistribution({"x->z": [0.9, 0.1]})],
                      progress=False)
    with pytest.raises(ValueError, match=r"edge x->y: 3 values for 2 primitives"):
        BilevelSearch(model, guide, comb_targets=[StructureDistribution({"x->y": [0.9, 0.1, 0.1]})],
                      progress=False)


def test_negative_c_comb_pushes_the_structure_prior_away_from_the_target():
    model = regression()
    guide = MeanFieldGuide(model).double()
    x = torch.randn(20, 2, dtype=torch.float64)
    y = torch.randn(20, dtype=torch.float64)
    target = StructureDistribution({"x->y": [0.99, 0.05]}, temperature=0.1)
    search = BilevelSearch(model, guide, Coefficients(c_comb=-1.0, c_temp=1.0), "joint",
                           inner_steps=5, outer_steps=30, hyper_lr=0.05, comb_targets=[target],
                           learn=["structure_logits"], progress=False)
    search.run(x, y)
    m = model.hyper.structure_logits.detach()
    assert m[1] - m[0] > 0.5  # prior mass moved off "linear", the target's primitive

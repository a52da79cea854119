"""The fast path of the ELBO terms (``fused_terms``) against the Pyro trace + replay path.

For every built-in guide that opts in, both paths must give the same ElboTerms (to 1e-6 relative,
on the same random draws) and the same gradients with respect to theta and h, in float32 and
float64; pairs that do not opt in (a custom prior, a Pyro handler) must keep the Pyro path.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from bnas_pyro import InnerLoop, SearchSpace
from bnas_pyro.guides import DeltaGuide, FullRankGuide, MeanFieldGuide, MultistartGuide
from bnas_pyro.models import (BayesianSupernet, GaussianWeightPrior, NormalLikelihood,
                              WEIGHT_SITE)
from bnas_pyro.objectives import fused_terms, pyro_trace_terms, supports_fused_terms, trace_terms

TERMS = ("log_likelihood", "kl_weights", "kl_structure")


def space(small: "bool | str" = False) -> SearchSpace:
    if small == "uniform":   # every edge offers three primitives: the Concrete rows are views
        return SearchSpace({"x": 5, "h": 6, "y": 3},
                           [("x", "h", ["linear", "tanh", "relu"]),
                            ("h", "y", ["linear", "relu", "zero"]),
                            ("x", "y", ["tanh", "linear", "zero"])])
    if small:   # full-rank guide: P^2 parameters
        return SearchSpace({"x": 3, "h": 4, "y": 3},
                           [("x", "h", ["linear", "tanh", "relu", "zero"]), ("h", "y", ["linear"]),
                            ("x", "y", ["linear", "zero"])])
    return SearchSpace({"x": 5, "h1": 6, "h2": 6, "y": 3},
                       [("x", "h1", ["linear", "tanh", "relu"]),
                        ("x", "h2", ["relu", "tanh", "zero"]),
                        ("h1", "h2", ["relu", "tanh", "identity", "zero"]),
                        ("h1", "y", ["linear", "zero"]), ("h2", "y", ["linear"])])


CASES = {
    "mean_field": (False, False, lambda m, g, s: MeanFieldGuide(m, init_scale=0.1, generator=g,
                                                                init_logits=s)),
    "mean_field_uniform": ("uniform", False, lambda m, g, s: MeanFieldGuide(
        m, init_scale=0.1, generator=g, init_logits=s)),
    "mean_field_coupled": (False, True, lambda m, g, s: MeanFieldGuide(
        m, init_scale=0.1, couple_to_structure=True, generator=g, init_logits=s)),
    "full_rank": (True, False, lambda m, g, s: FullRankGuide(m, init_scale=0.1, generator=g,
                                                             init_logits=s)),
    "delta": (False, False, lambda m, g, s: DeltaGuide(m, generator=g, init_logits=s)),
}


def build(case: str, dtype):
    small, scaled, make = CASES[case]
    sp = space(small)
    model = BayesianSupernet(sp, weight_prior=GaussianWeightPrior(scaled=scaled),
                             temperature=0.7).to(dtype)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        model.hyper.log_precision.normal_(0.0, 0.5, generator=gen)
        model.hyper.structure_logits.normal_(0.0, 1.0, generator=gen)
    logits = torch.randn(sum(model.layout.edge_sizes), generator=gen)
    guide = make(model, gen, logits)
    x = torch.randn(16, sp.node_shape(sp.input)[0], generator=gen, dtype=dtype)
    y = torch.randint(0, 3, (16,), generator=gen)
    return model, guide, x, y


def compare(model, guide, x, y, num_data, dtype):
    tensors = list(guide.parameters()) + list(model.hyper.parameters())
    torch.manual_seed(11)
    slow = pyro_trace_terms(model, guide, x, y, num_data)
    torch.manual_seed(11)
    fast = fused_terms(model, guide, x, y, num_data)
    for name in TERMS:
        a, b = getattr(slow, name), getattr(fast, name)
        assert torch.isfinite(a)
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-6, atol=1e-6,
                                   msg=lambda m: f"{name}: {m}")
    # gradients of the ELBO and of each term, w.r.t. theta and h
    for name in TERMS + ("elbo",):
        a, b = getattr(slow, name), getattr(fast, name)
        ga = torch.autograd.grad(a, tensors, retain_graph=True, allow_unused=True)
        gb = torch.autograd.grad(b, tensors, retain_graph=True, allow_unused=True)
        scale = max(float(g.abs().max()) for g in ga if g is not None) if any(
            g is not None for g in ga) else 0.0
        tol = 1e-6 if dtype == torch.float64 else 1e-5
        for u, v, t in zip(ga, gb, tensors):
            if u is None or v is None:
                assert (u is None or float(u.abs().max()) == 0) and (v is None or float(v.abs().max()) == 0)
                continue
            torch.testing.assert_close(v, u, rtol=tol, atol=tol * (1 + scale),
                                       msg=lambda m: f"d {name} / d{tuple(t.shape)}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", list(CASES))
def test_fast_path_equals_pyro_path(case, dtype):
    model, guide, x, y = build(case, dtype)
    assert supports_fused_terms(model, guide)
    compare(model, guide, x, y, 200, dtype)
    compare(model, guide, x, y, None, dtype)   # full batch: no plate scale


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_fast_path_equals_pyro_path_normal_likelihood(dtype):
    sp = SearchSpace({"x": 4, "h": 5, "y": 1},
                     [("x", "h", ["linear", "tanh"]), ("h", "y", ["linear", "zero"]),
                      ("x", "y", ["linear"])])
    model = BayesianSupernet(sp, likelihood=NormalLikelihood(precision=3.0, learn=True),
                             precision="parameter").to(dtype)
    guide = MeanFieldGuide(model, init_scale=0.2, generator=torch.Generator().manual_seed(0))
    x = torch.randn(12, 4, dtype=dtype)
    y = torch.randn(12, dtype=dtype)
    assert supports_fused_terms(model, guide)
    compare(model, guide, x, y, 50, dtype)


def test_trace_terms_dispatch():
    """trace_terms takes the fast path for opted-in pairs and the Pyro path otherwise."""
    model, guide, x, y = build("mean_field", torch.float64)
    torch.manual_seed(2)
    a = trace_terms(model, guide, x, y, 100)
    torch.manual_seed(2)
    b = fused_terms(model, guide, x, y, 100)
    assert float(a.elbo) == float(b.elbo)
    # an active Pyro handler keeps the Pyro path (and is honoured by it)
    with poutine.scale(scale=2.0):
        assert not supports_fused_terms(model, guide)
        torch.manual_seed(2)
        scaled = trace_terms(model, guide, x, y, 100)
    torch.testing.assert_close(scaled.elbo, 2 * a.elbo, rtol=1e-9, atol=1e-9)


class _LaplacePrior(GaussianWeightPrior):
    """A custom prior (Laplace weights): no fast path."""

    def __call__(self, model, log_gammas):
        scale = model.hyper.precision_per_parameter().rsqrt()
        return pyro.sample(WEIGHT_SITE, dist.Laplace(torch.zeros_like(scale), scale).to_event(1))


def test_custom_prior_and_multistart_keep_the_pyro_path():
    sp = space()
    model = BayesianSupernet(sp, weight_prior=_LaplacePrior())
    guide = MeanFieldGuide(model)
    assert not model.supports_fused_terms()
    assert not supports_fused_terms(model, guide)
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    torch.manual_seed(0)
    t = trace_terms(model, guide, x, y, 8)   # Monte Carlo KL against the Laplace prior
    torch.manual_seed(0)
    assert float(t.kl_weights) == float(pyro_trace_terms(model, guide, x, y, 8).kl_weights)
    plain = BayesianSupernet(sp)
    assert not supports_fused_terms(plain, MultistartGuide(plain, num_restarts=2))


class _MyGuide(MeanFieldGuide):
    def forward(self, x, y=None, num_data=None):
        return super().forward(x, y, num_data)


def test_subclassed_guide_keeps_the_pyro_path():
    model = BayesianSupernet(space())
    assert not supports_fused_terms(model, _MyGuide(model))


def test_a_subclass_s_own_fast_weight_distribution_is_used():
    """The moments shortcut of the mean-field guide stands in for its own q(W) only."""
    class Wider(MeanFieldGuide):
        def fused_weight_distribution(self, log_gamma):
            return dist.Normal(self.loc, 2 * self.scale, validate_args=False).to_event(1)

    model, _, x, y = build("mean_field", torch.float64)
    guide = Wider(model, init_scale=0.1, generator=torch.Generator().manual_seed(5))
    assert guide.fused_weight_moments(None) is None
    log_a = model.hyper.log_precision_per_parameter()
    prior = torch.distributions.Normal(torch.zeros_like(log_a), (-0.5 * log_a).exp())
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(guide.loc, 2 * guide.scale), prior).sum()
    torch.testing.assert_close(fused_terms(model, guide, x, y, 100).kl_weights, expected,
                               rtol=1e-10, atol=1e-10)


def test_inner_loop_fast_and_pyro_paths_take_the_same_steps(monkeypatch):
    """Ten InnerLoop steps give the same L values and parameters on either path."""
    import bnas_pyro.objectives as objectives

    def run(fast: bool):
        model, guide, x, y = build("mean_field", torch.float64)
        if not fast:
            monkeypatch.setattr(objectives, "supports_fused_terms", lambda m, g: False)
        torch.manual_seed(4)
        loop = InnerLoop(model, guide, lr=1e-2)
        values = [loop.step(x, y, 100) for _ in range(10)]
        monkeypatch.undo()
        return values, guide.loc.detach().clone()

    (va, la), (vb, lb) = run(True), run(False)
    torch.testing.assert_close(torch.tensor(va), torch.tensor(vb), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(la, lb, rtol=1e-9, atol=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
def test_fast_path_on_cuda():
    """Both paths on a CUDA device (the model, guide and data moved there) give the same terms."""
    model, guide, x, y = build("mean_field", torch.float32)
    device = torch.device("cuda")
    model, guide = model.to(device), guide.to(device)
    x, y = x.to(device), y.to(device)
    compare(model, guide, x, y, 200, torch.float32)
    loop = InnerLoop(model, guide, lr=1e-2)
    assert all(torch.isfinite(torch.tensor(loop.step(x, y, 200))) for _ in range(3))


# few classes: cross_entropy below 512 rows, the class-major log_softmax from 512 rows and on a
# class-major layout; 20 classes: cross_entropy or log_softmax along the rows
@pytest.mark.parametrize("rows", [20, 600])
@pytest.mark.parametrize("classes", [7, 20])
def test_categorical_log_likelihood_equals_pyro_categorical(rows, classes):
    """The Categorical likelihood's pointwise, summed and per-structure log-likelihoods against
    ``pyro.distributions.Categorical(logits)``, values and first and second derivatives (the
    greedy hypergradient differentiates twice)."""
    from bnas_pyro.models import CategoricalLikelihood

    g = torch.Generator().manual_seed(0)
    f = torch.randn(rows, classes, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, classes, (rows,), generator=g)
    lik = CategoricalLikelihood()
    expected = dist.Categorical(logits=f).log_prob(y)
    torch.testing.assert_close(lik.log_prob(None, f, y), expected, rtol=1e-12, atol=1e-12)
    total = lik.fused_log_likelihood(None, f, y, num_data=3 * rows)
    torch.testing.assert_close(total, 3 * expected.sum(), rtol=1e-12, atol=1e-10)
    probe = torch.randn(f.shape, generator=g, dtype=torch.float64)

    def derivatives(value):
        grad, = torch.autograd.grad(value, f, create_graph=True)
        return grad, torch.autograd.grad((grad * probe).sum(), f)[0]

    torch.testing.assert_close(derivatives(lik.log_prob(None, f, y).sum()),
                               derivatives(expected.sum()), rtol=1e-10, atol=1e-12)
    # three structures' outputs at once, on the class-major layout the structured guide's
    # forward gives (a transposed view)
    # (a transposed view), and on a row-major one
    for many in (torch.randn(3, classes, rows, generator=g, dtype=torch.float64).transpose(1, 2),
                 torch.randn(3, rows, classes, generator=g, dtype=torch.float64)):
        many.requires_grad_(True)
        ours = lik.structure_log_probs(None, many, y)
        theirs = dist.Categorical(logits=many).log_prob(y).sum(-1)
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-10)
        weights = torch.randn(3, generator=g, dtype=torch.float64)
        torch.testing.assert_close(torch.autograd.grad((ours * weights).sum(), many)[0],
                                   torch.autograd.grad((theirs * weights).sum(), many)[0],
                                   rtol=1e-10, atol=1e-12)

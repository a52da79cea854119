"""StructuredGuide.group_kls against torch's own Gaussian KL, group by group.

The space mixes groups of equal and different sizes with empty ones (``zero``, ``identity``),
so the per-group sums go through stretches of equal-sized neighbours and the empty groups' 0s;
a restricted support leaves some groups out of every structure (their KL is 0 and their scalars
are not read).  The greedy and unrolled hypergradients differentiate the KL twice: the second
derivatives are checked too.
"""

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from bnas_pyro import SearchSpace
from bnas_pyro.guides import StructuredGuide
from bnas_pyro.models import BayesianSupernet, CategoricalLikelihood


def _space():
    return SearchSpace({"x": 3, "a": 4, "b": 4, "y": 2},
                       [("x", "a", ["relu", "tanh", "zero"]),
                        ("x", "b", ["linear", "zero"]),
                        ("a", "b", ["relu", "identity", "tanh", "zero"]),
                        ("a", "y", ["linear", "zero"]),
                        ("b", "y", ["linear", "tanh"])])


def _reference(guide, model):
    """KL(N(loc, scale) || N(0, A^{-1/2})) summed over each group's scalars, by torch."""
    index = model.supernet.group_index
    log_a = model.hyper.log_precision_per_parameter()
    per = kl_divergence(Normal(guide.loc, guide.scale), Normal(torch.zeros_like(guide.loc),
                                                               (-0.5 * log_a).exp()))
    sums = per.new_zeros(*per.shape[:-1], model.layout.num_groups).index_add(-1, index, per)
    return sums * guide._live_groups.to(sums.dtype)


@pytest.mark.parametrize("per_structure", [False, True])
@pytest.mark.parametrize("precision", ["group", "parameter"])
@pytest.mark.parametrize("support", [None, [[0, 0, 1, 0, 1], [1, 1, 3, 0, 0], [0, 0, 2, 1, 1]]])
def test_group_kls_match_torch_kl(precision, support, per_structure):
    torch.manual_seed(0)
    model = BayesianSupernet(_space(), likelihood=CategoricalLikelihood(),
                             precision=precision).double()
    with torch.no_grad():
        model.hyper.log_precision.normal_(0.0, 0.7)
    guide = StructuredGuide(model, structure="joint", generator=torch.Generator().manual_seed(1),
                            support=None if support is None else torch.tensor(support),
                            weights_per_structure=per_structure).double()
    assert guide.per_structure is per_structure
    with torch.no_grad():
        guide.scale_unconstrained.normal_(-2.0, 0.5)
        guide.loc.normal_(0.0, 0.3)
    counts = torch.bincount(model.supernet.group_index, minlength=model.layout.num_groups)
    assert (counts == 0).any() and len(set(counts[counts > 0].tolist())) > 1
    if support is not None:   # a group with scalars that no structure of the support reads
        assert bool(((counts > 0) & ~guide._live_groups).any())
    kls = guide.group_kls()
    expected = _reference(guide, model)
    torch.testing.assert_close(kls, expected, rtol=1e-10, atol=1e-12)
    # first and second derivatives of a weighted sum, in the means, scales and precisions
    weights = torch.linspace(0.5, 2.0, kls.numel(), dtype=kls.dtype).view(kls.shape)
    inputs = [guide.loc, guide.scale_unconstrained, model.hyper.log_precision]
    ours = torch.autograd.grad((weights * guide.group_kls()).sum(), inputs, create_graph=True)
    theirs = torch.autograd.grad((weights * _reference(guide, model)).sum(), inputs,
                                 create_graph=True)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    probe = [torch.randn_like(g) for g in ours]
    second = torch.autograd.grad(sum((g * p).sum() for g, p in zip(ours, probe)), inputs)
    second_ref = torch.autograd.grad(sum((g * p).sum() for g, p in zip(theirs, probe)), inputs)
    for a, b in zip(second, second_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)

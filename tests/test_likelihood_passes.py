"""The structured guide's likelihood in several forward passes over the rows (on a CPU, passes
small enough for the cache) equals the vectorised supernet pass per structure, in values and
gradients, and the predictive mixture's outputs are those of one pass, rows in order."""

import pytest
import torch

import bnas_pyro.guides.structured as structured
from bnas_pyro.guides import StructuredGuide
from bnas_pyro.models import BayesianSupernet
from bnas_pyro.spaces import mlp_cell_space


@pytest.mark.parametrize("rows,structures,most", [(1079, 48, 1 << 17), (7, 96, 1 << 17),
                                                  (5, 10_000, 1 << 17), (0, 48, 1 << 17),
                                                  (3000, 48, 1 << 12), (1, 1, 1 << 17)])
def test_passes_cover_the_rows_in_order_each_within_the_budget(rows, structures, most):
    passes = structured._passes(rows, structures, torch.device("cpu"), most)
    limit = min(most, structured._CACHE_ROWS)
    assert passes[0][0] == 0 and passes[-1][1] == rows
    assert all(a == b for (_, a), (b, _) in zip(passes, passes[1:]))   # contiguous, in order
    sizes = [b - a for a, b in passes]
    if rows:
        assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
        assert all(n * structures <= limit for n in sizes) or max(sizes) == 1
        # no more passes than the budget needs
        assert len(passes) == -(-rows // max(1, limit // structures))
    else:
        assert passes == [(0, 0)]
    # off a CPU only the memory bound counts, and without one there is one pass
    meta = torch.device("meta")
    assert len(structured._passes(rows, structures, meta, 1 << 40)) == 1
    assert structured._passes(rows, structures, meta) == [(0, rows)]
    assert len(structured._passes(rows, structures, meta, most)) == (
        -(-rows // max(1, most // structures)) if rows else 1)


def _guide(per_structure: bool):
    model = BayesianSupernet(mlp_cell_space(3, 2, hidden=4, nodes=2)).double()
    guide = StructuredGuide(model, structure="joint", weights_per_structure=per_structure,
                            generator=torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        guide.loc.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(2))
    return model, guide


@pytest.mark.parametrize("per_structure", [False, True])
def test_likelihood_in_passes_equals_one_pass_per_structure(per_structure, monkeypatch):
    model, guide = _guide(per_structure)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (7,), generator=g)
    choices = guide.structure.choices
    S = choices.shape[0]
    # passes of 2, 2 and 3 rows
    monkeypatch.setattr(structured, "_CACHE_ROWS", 3 * S)
    calls = []
    outputs = guide._outputs
    monkeypatch.setattr(guide, "_outputs", lambda x, *a: calls.append(x.shape[0]) or outputs(x, *a))
    w = guide.sample_weights()
    ll = guide.log_likelihoods(x, y, w, choices, num_data=20)
    assert calls == [2, 2, 3]
    f = guide.forward_structures(x, w.expand(S, -1) if w.dim() == 1 else w, choices)
    reference = model.likelihood.log_prob(model, f.reshape(S * 7, -1), y.repeat(S)).reshape(
        S, 7).sum(-1) * (20 / 7)
    torch.testing.assert_close(ll, reference, rtol=1e-10, atol=1e-10)
    for p in (guide.loc, guide.scale_unconstrained):
        grad, = torch.autograd.grad(ll.sum(), p, retain_graph=True)
        grad_ref, = torch.autograd.grad(reference.sum(), p, retain_graph=True)
        torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-10)


def test_mixture_in_passes_keeps_the_rows_in_order(monkeypatch):
    _, guide = _guide(False)
    x = torch.randn(11, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    S = guide.structure.choices.shape[0]
    torch.manual_seed(4)
    log_q, (whole,) = guide.structure_mixture([x])
    monkeypatch.setattr(structured, "_CACHE_ROWS", 4 * S)     # passes of 3 or 4 rows
    assert len(structured._passes(11, S, x.device, structured._MIXTURE_ROWS)) == 3
    torch.manual_seed(4)
    log_q2, (parts,) = guide.structure_mixture([x])
    torch.testing.assert_close(log_q2, log_q)
    torch.testing.assert_close(parts, whole, rtol=1e-12, atol=1e-12)

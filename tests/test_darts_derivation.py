"""DARTS's derivation rule (Liu, Simonyan, Yang 2019, section 2.4) in the baseline, and the
``disconnected`` warning for any method's structure."""

from __future__ import annotations

import pytest
import torch

from bnas_pyro.analysis.collapse import collapse_statistics
from bnas_pyro.analysis.diagnostics import search_warnings, structure_warnings
from bnas_pyro.search.darts import DartsResult, DartsSearch
from bnas_pyro.spaces import mlp_cell_space
from bnas_pyro.training import PointSupernet


def _zero_heavy_network(space, boost: float = 6.0) -> PointSupernet:
    """softmax(alpha) puts most of its mass on zero on every edge that offers zero."""
    net = PointSupernet(space, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for e, edge in enumerate(space.edges):
            if "zero" in edge.labels:
                net.edge_alpha(e)[edge.labels.index("zero")] += boost
    return net


def test_darts_rule_keeps_an_input_to_output_path_when_zero_dominates():
    # x -> h1 offers no zero; x -> h2 and h1 -> h2 do: argmax cuts h2 (hence y) off the input
    space = mlp_cell_space(4, 3, hidden=5)
    net = _zero_heavy_network(space)
    probs = net.edge_probabilities()
    for name in ("x->h2", "h1->h2", "h1->y"):
        zero = space.edges[space.edge_index(name)].labels.index("zero")
        assert probs[name][zero] > 0.9  # most mass on zero
    argmax = DartsResult(net, derivation="argmax").structure
    assert argmax["x->h2"] == argmax["h1->h2"] == argmax["h1->y"] == "zero"
    assert collapse_statistics(space, argmax)["disconnected"]
    assert [w["code"] for w in structure_warnings(space, argmax)] == ["disconnected"]

    derived = DartsResult(net).structure  # the default: DARTS's rule
    assert all(label != "zero" for label in derived.values())
    assert not collapse_statistics(space, derived)["disconnected"]
    assert structure_warnings(space, derived) == []
    # the chosen op is the strongest of the non-zero ones on every edge
    for e, edge in enumerate(space.edges):
        nonzero = [l for l, lab in enumerate(edge.labels) if lab != "zero"]
        best = max(nonzero, key=lambda l: probs[edge.name][l])
        assert derived[edge.name] == edge.labels[best]


def test_darts_rule_top_k_prunes_the_weaker_incoming_edges():
    space = mlp_cell_space(4, 3, hidden=5)
    net = PointSupernet(space, torch.Generator().manual_seed(0))
    with torch.no_grad():  # into h2: h1 -tanh-> h2 strong, x -relu-> h2 weak
        x_h2, h1_h2 = space.edge_index("x->h2"), space.edge_index("h1->h2")
        net.edge_alpha(h1_h2)[space.edges[h1_h2].labels.index("tanh")] += 4.0
        net.edge_alpha(x_h2)[space.edges[x_h2].labels.index("relu")] += 1.0
    kept = net.derive(exclude_zero=True, top_k=1)
    assert kept["h1->h2"] == "tanh" and kept["x->h2"] == "zero"
    assert kept["x->h1"] != "zero"  # h1's only incoming edge has no zero: kept
    assert not collapse_statistics(space, kept)["disconnected"]
    full = net.derive(exclude_zero=True)  # top_k=None keeps every edge
    assert full["x->h2"] == "relu"
    with pytest.raises(ValueError, match="top_k"):
        net.derive(exclude_zero=False, top_k=1)
    with pytest.raises(ValueError, match="derivation"):
        DartsSearch(space, derivation="best")


def test_darts_search_derives_by_the_rule_and_keeps_the_argmax():
    space = mlp_cell_space(4, 3, hidden=5)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    res = DartsSearch(space, epochs=2, batch_size=16, seed=0).run(x, y, x[:32], y[:32])
    assert res.structure == res.network.derive(exclude_zero=True)
    assert res.argmax_structure == res.network.structure
    assert all(label != "zero" for label in res.structure.values())


def test_search_warnings_reuse_the_structure_warning():
    space = mlp_cell_space(4, 3, hidden=5)
    dead = {"x->h1": "relu", "x->h2": "zero", "h1->h2": "zero", "h1->y": "zero",
            "h2->y": "linear"}
    history = [{"L": -10.0 + i, "Q": -10.0 + i, "structure_probabilities": {}} for i in range(8)]
    codes = [w["code"] for w in search_warnings(space, dead, history)]
    assert "disconnected" in codes
    assert structure_warnings(space, dead, cause="c")[0]["cause"] == "c"

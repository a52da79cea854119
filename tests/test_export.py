"""The derived architecture and its JSON: SearchResult.select / derive / top_structures /
to_json and bnas_pyro.analysis.export.

The reference for every prediction is the supernet itself (METHOD.md section 1) evaluated at the
posterior means E_q[W] and at gamma = the one-hot vectors of the chosen structure.
"""

import itertools
import json
import math

import pytest
import torch
from torch import nn

from bnas_pyro import BilevelSearch, Coefficients, SearchSpace, load_network, register_primitive
from bnas_pyro.analysis.export import network_from_dict, network_to_dict
from bnas_pyro.analysis.result import SearchResult, top_products
from bnas_pyro.guides import MeanFieldGuide
from bnas_pyro.models import BayesianSupernet, NormalLikelihood
from bnas_pyro.primitives import available_primitives

if "test_mlp2" not in available_primitives():
    # an nn.Module primitive (its parameter names contain dots: "0.weight")
    register_primitive("test_mlp2", lambda i, o: nn.Sequential(nn.Linear(i, 3), nn.Tanh(),
                                                              nn.Linear(3, o)))

SPACE = {
    "nodes": {"x": 2, "h": 3, "y": 1},
    "edges": [("x", "h", ["linear", "tanh", "zero"]),
              ("h", "y", ["linear", "tanh"]),
              ("x", "y", ["linear", "zero", {"name": "tanh_subset", "features": [1]}, "test_mlp2"])],
}


def _data(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 2, generator=g, dtype=torch.float64)
    y = torch.tanh(x[:, 0]) + 0.5 * x[:, 1] + 0.1 * torch.randn(40, generator=g, dtype=torch.float64)
    return x.to(dtype), y.to(dtype)


def _search(dtype=torch.float32, outer_steps=20) -> tuple[SearchResult, torch.Tensor, torch.Tensor]:
    x, y = _data(dtype)
    space = SearchSpace(SPACE["nodes"], SPACE["edges"])
    model = BayesianSupernet(space, likelihood=NormalLikelihood(precision=10.0)).to(dtype)
    guide = MeanFieldGuide(model, init_scale=0.05, generator=torch.Generator().manual_seed(1)).to(dtype)
    result = BilevelSearch(model, guide, Coefficients(), "joint", inner_steps=5,
                           outer_steps=outer_steps, lr=0.03, seed=0, progress=False).run(x, y)
    return result, x, y


@pytest.fixture(scope="module")
def fitted():
    return _search()


def _supernet_at(result: SearchResult, choice, x):
    """The posterior-mean supernet restricted to ``choice`` (gamma one-hot; 0 on dropped edges)."""
    gammas = []
    for edge in result.space.edges:
        g = torch.zeros(len(edge), dtype=x.dtype)
        if choice.get(edge.name) is not None:
            g[edge.labels.index(choice[edge.name])] = 1.0
        gammas.append(g)
    with torch.no_grad():
        return result.model.supernet(x, result.guide.loc.detach(), gammas)


def _all_choices(space):
    for labels in itertools.product(*[e.labels for e in space.edges]):
        yield dict(zip([e.name for e in space.edges], labels))


def test_json_round_trip_gives_the_supernets_predictions(fitted):
    result, x, _ = fitted
    for rule, k in (("argmax", 2), ("topk", 1)):
        choice = result.select(rule, k)
        net = result.derive(rule=rule, k=k)
        reference = _supernet_at(result, choice, x)
        assert torch.allclose(net(x), reference, rtol=1e-6, atol=1e-6)
        text = result.to_json(rule=rule, k=k)                        # the whole result as JSON
        loaded = load_network(json.loads(text))
        assert torch.equal(loaded(x), net(x)), "JSON -> module must reproduce the predictions exactly"
        assert loaded.structure == net.structure
    # every one of the 3 x 2 x 4 = 24 structures, including the nn.Module primitive and skips
    for choice in _all_choices(result.space):
        net = result.derive(structure=choice)
        again = network_from_dict(json.loads(json.dumps(network_to_dict(net))))
        assert torch.equal(again(x), net(x))
        assert torch.allclose(net(x), _supernet_at(result, choice, x), rtol=1e-6, atol=1e-6)


def test_round_trip_in_float64_and_through_a_file(tmp_path):
    result, x, _ = _search(torch.float64, outer_steps=3)
    net = result.derive()
    assert all(p.dtype == torch.float64 for p in net.parameters())
    path = tmp_path / "result.json"
    result.to_json(path)
    loaded = load_network(path)
    assert torch.equal(loaded(x), net(x))
    assert torch.allclose(net(x), _supernet_at(result, result.structure, x), rtol=1e-12, atol=1e-12)


def test_derived_network_is_trainable(fitted):
    result, x, y = fitted
    before = result.guide.loc.detach().clone()
    net = result.derive(structure={"x->h": "tanh", "h->y": "linear", "x->y": "test_mlp2"})
    params = list(net.parameters())
    assert params and all(p.requires_grad for p in params)
    opt = torch.optim.Adam(params, lr=0.01)
    loss0 = float(((net(x).squeeze(-1) - y) ** 2).mean().detach())
    for _ in range(50):
        opt.zero_grad()
        loss = ((net(x).squeeze(-1) - y) ** 2).mean()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.9 * loss0
    assert torch.equal(result.guide.loc.detach(), before), "retraining must not touch q"


def test_top_structures_are_the_exact_ranking(fitted):
    result, _, _ = fitted
    probs = result.edge_probabilities()
    everything = sorted(
        ((math.prod(probs[e][result.space.edges[i].labels.index(c[e])]
                    for i, e in enumerate(c)), c) for c in _all_choices(result.space)),
        key=lambda t: -t[0])
    assert abs(sum(p for p, _ in everything) - 1.0) < 1e-5
    top = result.top_structures(24)
    assert [t.structure for t in top[:5]] == [c for _, c in everything[:5]]
    assert all(abs(t.probability - p) < 1e-9 for t, (p, _) in zip(top, everything))
    assert top[0].structure == result.structure
    assert abs(top[0].probability - result.structure_probability) < 1e-12
    assert result.probability_of(result.structure) == pytest.approx(result.structure_probability)


def test_top_products_matches_brute_force_on_random_tables():
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        sizes = torch.randint(1, 5, (4,), generator=g).tolist()
        tables = [torch.softmax(torch.randn(s, generator=g), 0).tolist() for s in sizes]
        brute = sorted((math.prod(t[i] for t, i in zip(tables, idx)), idx)
                       for idx in itertools.product(*[range(s) for s in sizes]))[::-1]
        best = top_products(tables, 7)
        assert [round(p, 12) for p, _ in best] == [round(p, 12) for p, _ in brute[:7]]


def test_topk_rule_keeps_the_k_most_probable_incoming_edges(fitted):
    result, _, _ = fitted
    logits = result.guide.structure.logits
    with torch.no_grad():   # x->h: tanh; h->y: tanh 0.88; x->y: zero is most probable
        logits.copy_(torch.tensor([0.0, 2.0, 0.0, -1.0, 1.0, 0.0, 3.0, 1.0, 0.5]))
    probs = result.edge_probabilities()
    assert result.select("argmax") == {"x->h": "tanh", "h->y": "tanh", "x->y": "zero"}
    # node y: h->y's best is tanh (0.88); x->y's best non-zero primitive is tanh_subset (0.12)
    assert probs["h->y"][1] > max(probs["x->y"][i] for i in (0, 2, 3))
    assert result.select("topk", k=1) == {"x->h": "tanh", "h->y": "tanh", "x->y": None}
    assert result.select("topk", k=2) == {"x->h": "tanh", "h->y": "tanh",
                                          "x->y": "tanh_subset(features=[1])"}
    net = result.derive(rule="topk", k=1)
    assert net.structure == {"x->h": "tanh", "h->y": "tanh"}


def test_json_contents(fitted):
    result, _, _ = fitted
    data = json.loads(result.to_json())
    assert data["structure"] == result.structure
    assert data["probability"] == pytest.approx(result.structure_probability)
    for edge, probs in result.edge_probabilities().items():
        assert data["edge_probabilities"][edge] == pytest.approx(probs)
    assert [t["structure"] for t in data["top_structures"]] == \
        [t.structure for t in result.top_structures(5)]
    assert SearchSpace.from_dict(data["space"]).edge_names == result.space.edge_names
    assert data["network"]["metadata"]["structure"] == result.structure
    with pytest.raises(ValueError, match="format"):
        network_from_dict({"format": "something else"})


def test_wrapped_module_with_dotted_parameter_names_becomes_a_module():
    """ModulePrimitive.to_module: an nn.Sequential's parameters ("0.weight", ...) are dotted."""
    from bnas_pyro.primitives import ModulePrimitive

    prim = ModulePrimitive(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), 3, 2)
    params = {n: torch.randn(s, dtype=torch.float64) for n, s in prim.parameter_shapes.items()}
    assert "0.weight" in params
    module = prim.to_module(params)
    x = torch.randn(5, 3, dtype=torch.float64)
    assert next(module.parameters()).dtype == torch.float64
    assert torch.equal(module(x), prim(x, params))
    params["0.bias"].add_(1.0)  # the module holds copies
    assert not torch.equal(module(x), prim(x, params))


def test_wrapped_module_names_missing_and_unexpected_parameters():
    from bnas_pyro.primitives import ModulePrimitive

    prim = ModulePrimitive(nn.Sequential(nn.Linear(3, 2)), 3, 2)
    with pytest.raises(KeyError, match=r"missing \['0.bias'\], unexpected \['0.bais'\]"):
        prim.to_module({"0.weight": torch.zeros(2, 3), "0.bais": torch.zeros(2)})

"""Convolutional primitives (shapes and values against torch references), the built-in spaces,
the conv space training a few steps, and the DARTS-style baseline."""

import pytest
import torch
import torch.nn.functional as F

from bnas_pyro import (
    BilevelSearch,
    Coefficients,
    SearchSpace,
    SearchSpaceError,
    build_primitive,
)
from bnas_pyro.analysis.collapse import collapse_statistics
from bnas_pyro.data import load_dataset
from bnas_pyro.guides import MeanFieldGuide
from bnas_pyro.models import BayesianSupernet
from bnas_pyro.search.darts import DartsSearch
from bnas_pyro.spaces import build_space, conv_cell_space, mlp_cell_space
from bnas_pyro.supernet import Supernet
from bnas_pyro.training import PointSupernet, discrete_network, train_network


def _params(prim, gen):
    return {n: torch.randn(s, generator=gen) for n, s in prim.parameter_shapes.items()}


@pytest.mark.parametrize("name,kernel,dilation", [("conv_3x3", 3, 1), ("conv_5x5", 5, 1),
                                                  ("dil_conv_3x3", 3, 2)])
def test_convolutions_match_torch(name, kernel, dilation):
    gen = torch.Generator().manual_seed(0)
    prim = build_primitive(name, (3, 8, 8), (5, 8, 8))
    assert prim.parameter_shapes == {"weight": (5, 3, kernel, kernel), "bias": (5,)}
    p = _params(prim, gen)
    x = torch.randn(4, 3, 8, 8, generator=gen)
    out = prim(x, p)
    assert out.shape == (4, 5, 8, 8)
    ref = torch.relu(F.conv2d(x, p["weight"], p["bias"], padding=dilation * (kernel - 1) // 2,
                              dilation=dilation))
    assert torch.allclose(out, ref)


def test_dilated_conv_has_a_5x5_receptive_field_with_holes():
    prim = build_primitive("dil_conv_3x3", (1, 9, 9), (1, 9, 9))
    p = {"weight": torch.ones(1, 1, 3, 3), "bias": torch.zeros(1)}
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0
    hit = prim(x, p)[0, 0] > 0
    assert hit.sum() == 9  # 9 taps
    rows, cols = hit.nonzero(as_tuple=True)
    assert set(rows.tolist()) == {2, 4, 6} and set(cols.tolist()) == {2, 4, 6}


def test_pooling_skip_none_and_heads():
    x = torch.zeros(2, 4, 8, 8)
    x[:, :, 0, 0] = 9.0
    mp = build_primitive("max_pool_3x3", (4, 8, 8), (4, 8, 8))(x, {})
    assert mp.shape == x.shape and mp[0, 0, 1, 1] == 9.0 and mp[0, 0, 2, 2] == 0.0
    ap = build_primitive("avg_pool_3x3", (4, 8, 8), (4, 8, 8))(x, {})
    # the corner window holds 4 real pixels (padding is not counted): 9 / 4
    assert torch.isclose(ap[0, 0, 0, 0], torch.tensor(9.0 / 4))
    assert torch.isclose(ap[0, 0, 1, 1], torch.tensor(1.0))  # 9 / 9
    skip = build_primitive("skip_connect", (4, 8, 8), (4, 8, 8))
    assert skip.is_identity and skip(x, {}) is x
    none = build_primitive("none", (4, 8, 8), (6, 8, 8))
    assert none.is_zero and none(x, {}).shape == (2, 6, 8, 8) and not none(x, {}).any()
    gen = torch.Generator().manual_seed(1)
    gap = build_primitive("gap_linear", (4, 8, 8), 10)
    assert gap.parameter_shapes == {"weight": (4, 10), "bias": (10,)}
    p = _params(gap, gen)
    z = torch.randn(3, 4, 8, 8, generator=gen)
    assert torch.allclose(gap(z, p), z.mean((-2, -1)) @ p["weight"] + p["bias"], atol=1e-6)
    flat = build_primitive("flatten_linear", (4, 8, 8), 10)
    assert flat.parameter_shapes["weight"] == (256, 10)
    assert flat(z, _params(flat, gen)).shape == (3, 10)


def test_shape_errors_name_the_edge():
    with pytest.raises(SearchSpaceError, match="edge a->b.*max_pool_3x3.*equal"):
        SearchSpace({"a": (3, 8, 8), "b": (5, 8, 8), "y": 2},
                    [("a", "b", ["max_pool_3x3"]), ("b", "y", ["gap_linear"])])
    with pytest.raises(SearchSpaceError, match="spatial"):
        SearchSpace({"a": (3, 8, 8), "b": (3, 4, 4), "y": 2},
                    [("a", "b", ["conv_3x3"]), ("b", "y", ["gap_linear"])])


def test_builtin_spaces_sizes():
    mlp = mlp_cell_space(64, 10)
    assert mlp.num_structures == 3 * 4 * 4 * 2
    assert mlp.edge_names == ["x->h1", "x->h2", "h1->h2", "h1->y", "h2->y"]
    d = load_dataset("digits_images")
    conv = build_space("conv_cell", d)
    assert conv.nodes["stem"] == (8, 8, 8) and conv.nodes["y"] == 10
    assert conv.num_structures == 7**3 * 2
    with pytest.raises(SearchSpaceError, match="image inputs"):
        build_space("conv_cell", load_dataset("wine"))
    with pytest.raises(SearchSpaceError, match="vector inputs"):
        build_space("mlp_cell", d)


def test_supernet_zero_fill_for_image_nodes():
    # n1 receives only "none": the supernet fills it with zeros of shape (batch, C, H, W)
    space = SearchSpace({"x": (1, 8, 8), "n1": (2, 8, 8), "y": 3},
                        [("x", "n1", ["none"]), ("n1", "y", ["gap_linear"])])
    net = Supernet(space)
    w = torch.randn(net.num_parameters)
    out = net(torch.randn(5, 1, 8, 8), w, [None, None])
    bias = w[-3:]
    assert out.shape == (5, 3) and torch.allclose(out, bias.expand(5, 3))


def test_conv_space_trains_a_few_steps():
    d = load_dataset("digits_images")
    space = conv_cell_space(d.input_shape, 10, channels=4)
    model = BayesianSupernet(space)
    x, y = d.x_train[:256], d.y_train[:256]
    model.check_data(x, y)
    with pytest.raises(ValueError, match="expects"):
        model.check_data(x.flatten(1), y)
    guide = MeanFieldGuide(model, init_scale=0.05, generator=torch.Generator().manual_seed(0))
    search = BilevelSearch(model, guide, Coefficients(), "joint", inner_steps=10, outer_steps=4,
                           batch_size=64, lr=0.03, progress=False, seed=0)
    result = search.run(x, y)
    first, last = result.history[0].L, result.history[-1].L
    assert torch.isfinite(torch.tensor([first, last])).all()
    assert last > first  # the ELBO rises over 40 steps
    probs = result.edge_probabilities()
    assert set(probs) == set(space.edge_names)
    assert all(abs(sum(p) - 1) < 1e-5 for p in probs.values())


def test_point_supernet_and_discrete_network():
    space = mlp_cell_space(4, 3, hidden=5)
    net = PointSupernet(space, torch.Generator().manual_seed(0))
    for g in net.gammas():
        assert g is None or torch.isclose(g.sum(), torch.tensor(1.0))
    assert net(torch.randn(7, 4)).shape == (7, 3)
    with torch.no_grad():  # make zero the argmax on every edge that has it
        for e, edge in enumerate(space.edges):
            if "zero" in edge.labels:
                net.edge_alpha(e)[edge.labels.index("zero")] += 5.0
    assert net.structure["h1->y"] == "zero" and net.structure["h1->h2"] == "zero"
    darts_rule = net.derive(exclude_zero=True)
    assert all(v != "zero" for v in darts_rule.values())
    assert darts_rule["x->h1"] == net.structure["x->h1"]  # no zero there: the same argmax
    choice = {"x->h1": "relu", "x->h2": "zero", "h1->h2": "identity", "h1->y": "zero"}
    small = discrete_network(space, choice)
    assert all(len(e) == 1 for e in small.space.edges)
    assert small.structure == {**choice, "h2->y": "linear"}
    stats = collapse_statistics(space, small.structure)
    assert stats["edges_with_skip_or_zero"] == ["x->h2", "h1->h2", "h1->y"]
    assert stats["collapsed"] and stats["skip_zero_fraction"] == 1.0
    assert not stats["disconnected"]  # x -relu-> h1 -identity-> h2 -linear-> y
    stats = collapse_statistics(space, {**small.structure, "h1->h2": "tanh"})
    assert not stats["collapsed"] and abs(stats["skip_zero_fraction"] - 2 / 3) < 1e-12
    dead = collapse_statistics(space, {**small.structure, "h1->h2": "zero"})
    assert dead["collapsed"] and dead["disconnected"]  # h2 (hence y) gets nothing from x
    net = discrete_network(space, {**small.structure, "h1->h2": "zero"})
    out = net(torch.randn(6, 4))
    assert torch.allclose(out, out[:1].expand(6, 3))  # the output ignores the input


def test_darts_baseline_and_retraining_learn_wine():
    d = load_dataset("wine")
    space = mlp_cell_space(13, 3, hidden=8)
    res = DartsSearch(space, epochs=15, batch_size=32, seed=0).run(d.x_train, d.y_train,
                                                                     d.x_val, d.y_val)
    again = DartsSearch(space, epochs=15, batch_size=32, seed=0).run(d.x_train, d.y_train,
                                                                       d.x_val, d.y_val)
    assert res.structure == again.structure  # seeded
    assert torch.equal(res.network.alpha, again.network.alpha)
    net = discrete_network(space, res.structure, torch.Generator().manual_seed(0))
    losses = train_network(net, d.x_train, d.y_train, "classification", epochs=40, batch_size=32)
    assert losses[-1] < 0.5 * losses[0]
    acc = float((net(d.x_test).argmax(-1) == d.y_test).float().mean())
    assert acc >= 0.9  # wine is easy: a linear model reaches ~0.97


def test_input_shape_is_the_input_node_shape():
    from bnas_pyro import SearchSpace

    vector = SearchSpace({"x": 5, "y": 1}, [("x", "y", ["linear"])])
    assert vector.input_shape == (5,) and vector.node_shape("y") == (1,)
    image = conv_cell_space((1, 8, 8), 10, channels=4)
    assert image.input_shape == (1, 8, 8)

"""The supernet forward pass, dtype/device following and seeded reproducibility."""

import torch

from bnas_pyro import Coefficients, SearchSpace, fit
from bnas_pyro.guides import MeanFieldGuide
from bnas_pyro.models import BayesianSupernet


def space():
    return SearchSpace({"x": 3, "h": 4, "y": 2},
                       [("x", "h", ["linear", "tanh", "zero"]), ("h", "y", ["relu", "linear"]),
                        ("x", "y", ["constant", {"name": "poly", "degree": 2}])])


def test_forward_equals_the_formula_of_method_section_1():
    s = space()
    model = BayesianSupernet(s)
    net, layout = model.supernet, model.layout
    w = torch.randn(layout.num_parameters)
    gammas = [torch.tensor([0.2, 0.5, 0.3]), torch.tensor([0.6, 0.4]), torch.tensor([0.7, 0.3])]
    x = torch.randn(5, 3)
    p = lambda e, l: layout.unflatten(w, e, l)  # noqa: E731
    h = (0.2 * (x @ p(0, 0)["weight"] + p(0, 0)["bias"])
         + 0.5 * torch.tanh(x @ p(0, 1)["weight"] + p(0, 1)["bias"]))
    y = (0.6 * torch.relu(h @ p(1, 0)["weight"] + p(1, 0)["bias"])
         + 0.4 * (h @ p(1, 1)["weight"] + p(1, 1)["bias"])
         + 0.7 * p(2, 0)["bias"]
         + 0.3 * (p(2, 1)["bias"] + torch.cat([x, x**2], -1) @ p(2, 1)["weight"]))
    assert torch.allclose(net(x, w, gammas), y, atol=1e-6)
    assert layout.num_groups == 7
    assert layout.group_sizes().tolist() == [16, 16, 0, 10, 10, 2, 14]


def test_model_and_guide_follow_float64():
    model = BayesianSupernet(space()).double()
    guide = MeanFieldGuide(model).double()
    x = torch.randn(20, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (20,))
    loop = fit(model, guide, x, y, num_steps=5, progress=False)
    assert all(p.dtype == torch.float64 for p in guide.parameters())
    assert all(p.dtype == torch.float64 for p in model.hyper.parameters())
    assert len(loop.history) == 5


def test_same_seed_same_result_different_seed_different_result():
    x = torch.randn(30, 3)
    y = (x[:, 0] > 0).long()

    def run(seed):
        torch.manual_seed(seed)
        model = BayesianSupernet(space())
        guide = MeanFieldGuide(model)
        fit(model, guide, x, y, num_steps=30, batch_size=10, seed=seed, progress=False,
            coefficients=Coefficients(c_temp=0.5))
        return torch.cat([p.detach().flatten() for p in guide.parameters()])

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_guides_are_created_in_the_models_dtype():
    from bnas_pyro.guides import DeltaGuide, FullRankGuide

    model = BayesianSupernet(space()).double()
    for guide in (MeanFieldGuide(model), FullRankGuide(model), DeltaGuide(model)):
        assert {p.dtype for p in guide.parameters()} == {torch.float64}
    x = torch.randn(4, 3, dtype=torch.float64)
    from bnas_pyro import trace_terms

    terms = trace_terms(model, MeanFieldGuide(model), x, torch.randint(0, 2, (4,)))
    assert terms.log_likelihood.dtype == terms.kl.dtype == torch.float64


def test_structure_batched_forward_equals_one_forward_per_structure():
    """forward_structures (node values shared between structures) against the supernet at
    gamma one-hot, structure by structure, with two weight rows: values and gradients (a space
    with generic primitives, constant and poly: the generic plan; the 96 structures of the 2-node
    MLP cell and 200 of the 3-node one's: the fused plan, with one weight row and two)."""
    import itertools

    from bnas_pyro.spaces import mlp_cell_space
    from bnas_pyro.supernet_structures import forward_structures, plan_structures

    first = space()
    for sp in (first, mlp_cell_space(3, 2, hidden=4, nodes=2), mlp_cell_space(3, 2, hidden=3, nodes=3)):
        net = BayesianSupernet(sp).double().supernet
        sizes = [len(e) for e in sp.edges]
        choices = torch.tensor(list(itertools.product(*[range(k) for k in sizes])))
        g = torch.Generator().manual_seed(0)
        if choices.shape[0] > 200:   # 200 of the 3-node cell's 12288 structures
            choices = choices[torch.randperm(choices.shape[0], generator=g)[:200]]
        w = torch.randn(2, net.num_parameters, generator=g, dtype=torch.float64,
                        requires_grad=True)
        rows = torch.randint(0, 2, (choices.shape[0],), generator=g)
        x = torch.randn(6, 3, generator=g, dtype=torch.float64)
        plan = plan_structures(net, choices, rows)
        assert plan.fused == (sp is not first)   # the MLP cell takes the fused plan
        out = forward_structures(net, x, w, plan=plan)
        torch.testing.assert_close(forward_structures(net, x, w, choices, rows), out)
        # one flat W, no weight rows: the last hidden node's linear maps to y are taken on its
        # sources' banks, before the gather
        if plan.fused:
            assert plan_structures(net, choices).linear_before_gather == {sp.order[-2]}
        one = forward_structures(net, x, w[0], choices)
        one_ref = torch.stack([
            net(x, w[0], [None if k == 1 else torch.nn.functional.one_hot(c[e], k).double()
                          for e, k in enumerate(sizes)]) for c in choices])
        torch.testing.assert_close(one, one_ref, rtol=1e-10, atol=1e-12)
        probe = torch.randn(one.shape, generator=g, dtype=torch.float64)
        grad, = torch.autograd.grad((one * probe).sum(), w)
        grad_ref, = torch.autograd.grad((one_ref * probe).sum(), w)
        torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-12)
        expected = torch.stack([
            net(x, w[r], [None if k == 1 else torch.nn.functional.one_hot(c[e], k).double()
                          for e, k in enumerate(sizes)])
            for c, r in zip(choices, rows)])
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
        probe = torch.randn(out.shape, generator=g, dtype=torch.float64)
        grad, = torch.autograd.grad((out * probe).sum(), w)
        grad_ref, = torch.autograd.grad((expected * probe).sum(), w, retain_graph=True)
        torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-12)
        # a few structures only: the pairs none of them chooses are not computed (fused plan),
        # their weights get no gradient
        for part in (slice(0, 1), slice(0, None, 7)):
            sub = forward_structures(net, x, w, choices[part], rows[part])
            torch.testing.assert_close(sub, expected[part], rtol=1e-10, atol=1e-12)
            grad, = torch.autograd.grad((sub * probe[part]).sum(), w)
            grad_ref, = torch.autograd.grad((expected[part] * probe[part]).sum(), w,
                                            retain_graph=True)
            torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-12)


def _per_pair_forward(space, layout, x, w, gammas):
    """f_out by the formula of METHOD.md section 1, one primitive call per (edge, primitive)."""
    values = {space.input: x}
    for node in space.order[1:]:
        total = None
        for e, edge in enumerate(space.edges):
            if edge.target != node:
                continue
            for l, prim in enumerate(space.primitive_instances[e]):
                if prim.is_zero:
                    continue
                g = 1.0 if gammas[e] is None else gammas[e][l]
                out = g * prim(values[edge.source], layout.unflatten(w, e, l))
                total = out if total is None else total + out
        values[node] = total if total is not None else x.new_zeros(x.shape[0], space.nodes[node])
    return values[space.output]


def test_fused_mixing_into_several_targets_equals_the_per_pair_formula():
    """Blocks with several targets (their rows in and out of the targets' order), identities,
    edges offering only some kinds: the fused forward and its gradients
    equal the per-pair sum."""
    prims = ["linear", "tanh", "relu", "identity", "zero"]
    s = SearchSpace({"x": 4, "h1": 4, "h2": 4, "h3": 4, "y": 4},
                    [("x", "h2", ["tanh", "identity"]), ("x", "h1", prims), ("h1", "h2", prims),
                     ("x", "h3", ["relu", "linear"]), ("h2", "h3", ["zero"]), ("h3", "y", prims),
                     ("h1", "y", prims), ("h2", "y", prims), ("x", "y", ["relu"])],
                    input="x", output="y")
    model = BayesianSupernet(s).double()
    net, layout = model.supernet, model.layout
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(layout.num_parameters, generator=gen, dtype=torch.float64, requires_grad=True)
    gammas = [None if len(edge) == 1 else
              torch.rand(len(edge), generator=gen, dtype=torch.float64).softmax(0).requires_grad_()
              for edge in s.edges]
    x = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    fused = net(x, w, gammas)
    reference = _per_pair_forward(s, layout, x, w, gammas)
    assert torch.allclose(fused, reference, atol=1e-12)
    probe = torch.randn(fused.shape, generator=gen, dtype=torch.float64)
    leaves = [w] + [g for g in gammas if g is not None]
    grads_fused = torch.autograd.grad((fused * probe).sum(), leaves)
    grads_reference = torch.autograd.grad((reference * probe).sum(), leaves)
    for a, b in zip(grads_fused, grads_reference):
        assert torch.allclose(a, b, atol=1e-12)


def test_a_pickled_supernet_computes_the_same_forward():
    import pickle
    s = SearchSpace({"x": 3, "h": 3, "y": 3},
                    [("x", "h", ["linear", "tanh", "identity"]), ("h", "y", ["relu", "identity"]),
                     ("x", "y", ["linear", "identity"])])
    net = BayesianSupernet(s).supernet
    copy = pickle.loads(pickle.dumps(net))
    w = torch.randn(net.num_parameters)
    gammas = [torch.tensor([0.2, 0.5, 0.3]), torch.tensor([0.6, 0.4]), torch.tensor([0.7, 0.3])]
    x = torch.randn(5, 3)
    assert torch.equal(copy(x, w, gammas), net(x, w, gammas))


def test_per_structure_weights_take_the_fused_plan_with_the_same_likelihoods():
    """One W per structure (a structured guide with q(W | s) per structure, the evidence draws of
    the ranking): the fused plan, each structure its own weight row, gives the log-likelihoods
    and gradients of the vectorised supernet pass per structure."""
    from bnas_pyro.guides import StructuredGuide
    from bnas_pyro.spaces import mlp_cell_space

    model = BayesianSupernet(mlp_cell_space(3, 2, hidden=4, nodes=2)).double()
    guide = StructuredGuide(model, structure="joint", weights_per_structure=True,
                            generator=torch.Generator().manual_seed(0)).double()
    assert guide.per_structure
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (7,), generator=g)
    choices = guide.structure.choices
    w = guide.sample_weights()                        # (S, P), one row per structure
    fused = guide.log_likelihoods(x, y, w, choices, num_data=20)
    f = guide.forward_structures(x, w, choices)       # the vmapped supernet
    S = f.shape[0]
    reference = model.likelihood.log_prob(model, f.reshape(S * 7, -1), y.repeat(S)).reshape(
        S, 7).sum(-1) * (20 / 7)
    torch.testing.assert_close(fused, reference, rtol=1e-10, atol=1e-10)
    grad, = torch.autograd.grad(fused.sum(), guide.loc, retain_graph=True)
    grad_ref, = torch.autograd.grad(reference.sum(), guide.loc)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-10)


def test_model_output_at_a_vertex_computes_the_chosen_pairs_only():
    """Without gradients, at a vertex of the simplex (every gamma one-hot, a draw of a discrete
    q(s)) the model's supernet output takes the structure forward, which computes only the chosen
    pairs, and equals the full supernet's; off a vertex, or with gradients, the full supernet."""
    from bnas_pyro.spaces import mlp_cell_space
    from bnas_pyro.models.supernet_model import _VERTEX_PLANS, vertex_choices

    sp = mlp_cell_space(5, 3, hidden=4, nodes=2)
    model = BayesianSupernet(sp).double()
    net = model.supernet
    g = torch.Generator().manual_seed(0)
    w = torch.randn(net.num_parameters, generator=g, dtype=torch.float64)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64)
    sizes = [len(e) for e in sp.edges]
    choice = [k - 1 for k in sizes]
    gammas = [None if k == 1 else torch.nn.functional.one_hot(torch.tensor(c), k).double()
              for c, k in zip(choice, sizes)]
    assert vertex_choices(gammas) == tuple(choice)
    with torch.no_grad():
        fast = model.supernet_output(x, w, gammas)
    assert list(_VERTEX_PLANS[net]) == [(tuple(choice), "cpu")]
    torch.testing.assert_close(fast, net(x, w, gammas), rtol=1e-12, atol=1e-12)
    soft = [None if k == 1 else torch.full((k,), 1.0 / k, dtype=torch.float64) for k in sizes]
    assert vertex_choices(soft) is None
    two = [None if gm is None else torch.ones_like(gm) for gm in gammas]
    assert vertex_choices(two) is None
    with torch.no_grad():
        torch.testing.assert_close(model.supernet_output(x, w, soft), net(x, w, soft))

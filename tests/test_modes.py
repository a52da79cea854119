"""Modes as schedules of the coefficients (METHOD.md section 4).

evidence / grow / prune / enumerate and the classical criteria (ml, map, holdout) by name,
temperature annealing combinable with any of them, user-defined schedules, the schedule actually
driving a search, and the enumeration of the 8 structures of a 2 x 2 x 2 space in 8 runs.
"""

import math

import pytest
import torch

from bnas_pyro import BilevelSearch, Coefficients, SearchSpace
from bnas_pyro.guides import MeanFieldGuide
from bnas_pyro.models import BayesianSupernet, NormalLikelihood
from bnas_pyro.modes import (Annealed, EnumerateMode, Ramp, anneal, available_modes, custom,
                             get_mode, progress, ramp, register_mode)
from bnas_pyro.search.enumeration import run_enumeration
from bnas_pyro.structure_targets import StructureDistribution, StructureMixture, comb_kl


def test_ramps_and_progress():
    assert progress(0, 11) == 0.0 and progress(10, 11) == 1.0 and progress(5, 11) == 0.5
    assert progress(0, 1) == 0.0
    assert ramp(100.0, 0.1, 0.5) == pytest.approx(math.sqrt(10.0))        # geometric midpoint
    assert ramp(1.0, 3.0, 0.5, "linear") == pytest.approx(2.0)
    with pytest.raises(ValueError, match="positive"):
        ramp(0.0, 1.0, 0.5)
    r = Ramp(Coefficients(c_reg=2.0), c_prior=(100.0, 0.1))
    assert r(0, 11).c_prior == pytest.approx(100.0) and r(10, 11).c_prior == pytest.approx(0.1)
    assert r(5, 11).c_prior == pytest.approx(math.sqrt(10.0)) and r(5, 11).c_reg == 2.0
    with pytest.raises(ValueError, match="unknown coefficient"):
        Ramp(c_priors=(1.0, 2.0))


def test_modes_by_name():
    assert set(available_modes()) >= {"evidence", "grow", "prune", "enumerate"}
    ev = get_mode("evidence")
    assert all(ev(k, 10).is_evidence for k in range(10))
    grow, prune = get_mode("grow"), get_mode("prune")
    g = [grow(k, 20).c_prior for k in range(20)]
    p = [prune(k, 20).c_prior for k in range(20)]
    assert all(b < a for a, b in zip(g, g[1:])) and g[0] == pytest.approx(100.0)
    assert all(b > a for a, b in zip(p, p[1:])) and p[-1] == pytest.approx(100.0)
    assert grow.hypergradient == prune.hypergradient == "hoag"
    custom_prune = get_mode("prune", base=Coefficients(c_temp=0.5), start=1.0, end=10.0)
    assert custom_prune(0, 5).c_prior == 1.0 and custom_prune(4, 5).c_prior == pytest.approx(10.0)
    assert custom_prune(2, 5).c_temp == 0.5
    with pytest.raises(ValueError, match="available"):
        get_mode("pruning")
    with pytest.raises(ValueError, match="decreasing"):
        get_mode("grow", start=0.1, end=10.0)
    en = get_mode("enumerate", base={"c_temp": 0.7})
    assert isinstance(en, EnumerateMode) and en(0, 10) == en.run_coefficients(0)
    assert en.run_coefficients(0).c_comb == 0.0 and en.run_coefficients(0).c_temp == 0.7
    later = en.run_schedule(3)(5, 10)
    assert later.c_comb == -200.0 and later.c_reg == 100.0 and later.c_temp == 0.7


def test_annealing_combines_with_any_mode():
    mode = get_mode("prune", anneal_to=0.05)
    c = [mode(k, 30) for k in range(30)]
    assert c[0].c_temp == pytest.approx(1.0) and c[-1].c_temp == pytest.approx(0.05)
    assert all(b.c_temp < a.c_temp for a, b in zip(c, c[1:]))
    assert c[0].c_prior == pytest.approx(0.1) and c[-1].c_prior == pytest.approx(100.0)
    a = anneal(Coefficients(c_reg=3.0, c_temp=2.0), end=0.2, kind="linear")
    assert a(0, 3).c_temp == 2.0 and a(1, 3).c_temp == pytest.approx(1.1) and a(2, 3).c_reg == 3.0
    assert isinstance(get_mode("evidence").anneal(0.1).schedule, Annealed)
    with pytest.raises(ValueError):
        anneal(end=0.0)


def test_user_defined_schedules():
    s = custom(lambda p: {"c_prior": 1 + 9 * p})
    assert s(0, 11).c_prior == 1.0 and s(10, 11).c_prior == pytest.approx(10.0)
    s3 = custom(lambda p, step, n: Coefficients(c_temp=1.0 / (1 + step)))
    assert s3(3, 10).c_temp == 0.25
    with pytest.raises(TypeError, match="Coefficients or a mapping"):
        custom(lambda p: 3.0)(0, 2)
    with pytest.raises(ValueError, match="c_temp"):   # Coefficients validates every value
        custom(lambda p: {"c_temp": -1.0})(0, 2)
    register_mode("test_warm", lambda base=None: custom(lambda p: {"c_temp": 5 - 4 * p}, base),
                  overwrite=True)
    assert get_mode("test_warm")(9, 10).c_temp == pytest.approx(1.0)


def _tiny(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 1, generator=g)
    y = (0.8 * x).squeeze(-1) + 0.3 * torch.randn(40, generator=g)
    space = SearchSpace({"x": 1, "a": 1, "b": 1, "y": 1},
                        [("x", "a", ["linear", "tanh"]), ("a", "b", ["linear", "tanh"]),
                         ("b", "y", ["linear", "tanh"])])
    return space, x, y


def test_a_mode_drives_the_search():
    space, x, y = _tiny()
    model = BayesianSupernet(space, likelihood=NormalLikelihood(precision=10.0))
    guide = MeanFieldGuide(model)
    mode = get_mode("grow", start=10.0, end=0.1, hypergradient="greedy").anneal(0.2)
    result = BilevelSearch(model, guide, mode, mode.hypergradient, inner_steps=2, outer_steps=5,
                           progress=False).run(x, y)
    seen = [r.coefficients for r in result.history]
    assert [c["c_prior"] for c in seen] == pytest.approx([10.0 * 0.01 ** (k / 4) for k in range(5)])
    assert seen[-1]["c_temp"] == pytest.approx(0.2) and model.temperature == pytest.approx(0.2)


def test_structure_mixture_kl_is_the_kl_to_the_mixture():
    space, _, _ = _tiny()
    model = BayesianSupernet(space, likelihood=NormalLikelihood())
    with torch.no_grad():
        model.hyper.structure_logits.copy_(torch.tensor([1.0, -1.0, 0.5, 0.0, -0.3, 0.3]))
    a = StructureDistribution.at_structure(space, {"x->a": "linear", "a->b": "linear", "b->y": "tanh"},
                                           temperature=1.0)
    # one component: the mixture KL is the plain KL (on the same prior draws: to rounding)
    torch.manual_seed(0)
    one = float(comb_kl(model, [StructureMixture([a])], 20000).detach())
    torch.manual_seed(0)
    assert one == pytest.approx(float(comb_kl(model, [a], 20000).detach()), rel=1e-5)
    # two copies of the same component: the same distribution, the same KL
    torch.manual_seed(0)
    assert float(comb_kl(model, [StructureMixture([a, a])], 20000).detach()) == pytest.approx(one, rel=1e-5)
    # KL to a mixture is at most the mean KL to its components (convexity of -log)
    b = StructureDistribution.at_structure(space, {"x->a": "tanh", "a->b": "tanh", "b->y": "linear"},
                                           temperature=1.0)
    torch.manual_seed(0)
    mix = float(comb_kl(model, [StructureMixture([a, b])], 20000).detach())
    torch.manual_seed(0)
    mean = float(comb_kl(model, [a, b], 20000).detach()) / 2
    assert mix < mean


def _enumerate(combine: str, data_seed: int = 0):
    space, x, y = _tiny(data_seed)

    def factory(i):
        model = BayesianSupernet(space, likelihood=NormalLikelihood(precision=10.0))
        return model, MeanFieldGuide(model, init_scale=0.05,
                                     generator=torch.Generator().manual_seed(i))

    return run_enumeration(EnumerateMode(combine=combine), factory, x, y, seed=100 * data_seed,
                           inner_steps=10, outer_steps=30, lr=0.02, hyper_lr=0.05)


def test_enumerate_visits_all_8_structures_in_8_runs():
    torch.set_num_threads(1)
    res = _enumerate("mixture")
    print(res.summary())
    assert len(res.structures) == 8
    assert res.num_distinct == 8, res.summary()


@pytest.mark.slow
def test_enumerate_reproduction():
    """`make reproduce`: three data sets; and the per-edge sum of METHOD.md's formula, measured."""
    torch.set_num_threads(1)
    for data_seed in (1, 2, 3):
        res = _enumerate("mixture", data_seed)
        print(f"data seed {data_seed}, mixture:", res.num_distinct, "distinct in 8 runs")
        assert res.num_distinct == 8, res.summary()
    res = _enumerate("sum")
    print("sum of per-target KLs:", res.num_distinct, "distinct in 8 runs\n" + res.summary())
    assert res.num_distinct < 8   # the per-edge decomposition (EnumerateMode docstring)


# ---------------------------------------------------------------------------- criteria presets
def test_criteria_presets_are_modes_of_the_same_machinery():
    from bnas_pyro.analysis.complexity import informative_parameters
    from bnas_pyro.analysis.criteria import available_criteria, score
    from bnas_pyro.guides import DeltaGuide

    assert set(available_criteria()) == {"ml", "map", "evidence", "holdout", "aic", "bic"}
    assert {"ml", "map", "holdout"} <= set(available_modes())
    ml = get_mode("maximum_likelihood")
    c = ml(0, 1)
    assert (ml.name, c.c_reg, c.c_prior, ml.guide, ml.fit_hyper) == ("ml", 0.0, 0.0, "delta", False)
    assert get_mode("evidence")(0, 1).is_evidence
    holdout = get_mode("holdout", base=Coefficients(c_temp=0.3))
    assert holdout.validation and holdout.hypergradient == "greedy" and holdout(0, 1).c_temp == 0.3
    with pytest.raises(ValueError, match="available"):
        get_mode("waic")
    with pytest.raises(ValueError, match="available"):
        score("waic", None, torch.zeros(1))

    space, x, y = _tiny()
    # MAP: a point-mass guide and a fixed h
    model = BayesianSupernet(space, likelihood=NormalLikelihood(precision=10.0))
    map_ = get_mode("map")
    assert map_.guide == "delta" and not map_.fit_hyper
    search = BilevelSearch.for_mode(model, DeltaGuide(model), map_, inner_steps=5, outer_steps=10,
                                    lr=0.05, progress=False)
    h0 = {k: v.detach().clone() for k, v in model.hyper.state_dict().items()}
    result = search.run(x, y)
    assert all(torch.equal(h0[k], v) for k, v in model.hyper.state_dict().items())
    # the MAP score is log p(y | W_map) + log p(W_map | h), the ML score log p(y | W_map)
    torch.manual_seed(0)
    s_map = score("map", result, x, y, num_particles=50)
    torch.manual_seed(0)
    s_ml = score("ml", result, x, y, num_particles=50)
    w = result.guide.loc.detach()
    A = model.hyper.precision_per_parameter().detach()
    log_prior = float(torch.distributions.Normal(0.0, A.rsqrt()).log_prob(w).sum())
    assert s_map - s_ml == pytest.approx(log_prior, rel=1e-4)
    # AIC / BIC: the expected log-likelihood minus the count of informative parameters
    model2 = BayesianSupernet(space, likelihood=NormalLikelihood(precision=10.0))
    result2 = BilevelSearch.for_mode(model2, MeanFieldGuide(model2), get_mode("evidence"),
                                     inner_steps=5, outer_steps=10, progress=False).run(x, y)
    k = int(informative_parameters(model2, result2.guide, 1.0).sum())
    torch.manual_seed(0)
    loglik = score("ml", result2, x, y, num_particles=200)
    torch.manual_seed(0)
    assert score("aic", result2, x, y, num_particles=200) == pytest.approx(loglik - k)
    torch.manual_seed(0)
    bic = score("bic", result2, x, y, num_particles=200)
    assert bic == pytest.approx(loglik - 0.5 * k * math.log(x.shape[0]))
    with pytest.raises(ValueError, match="x_val"):
        score("holdout", result2, x, y)


def test_for_mode_applies_what_the_mode_needs():
    space, x, y = _tiny()
    model = BayesianSupernet(space, likelihood=NormalLikelihood(precision=10.0))
    with pytest.raises(ValueError, match="mode 'map' is defined with the 'delta' guide"):
        BilevelSearch.for_mode(model, MeanFieldGuide(model), get_mode("map"), progress=False)
    holdout = BilevelSearch.for_mode(model, MeanFieldGuide(model), get_mode("holdout"),
                                     validation=False, progress=False)
    assert holdout.validation and holdout.strategy.name == "greedy"
    evidence = BilevelSearch.for_mode(model, MeanFieldGuide(model), get_mode("evidence"),
                                      hyper_lr=0.3, progress=False)
    assert not evidence.validation and evidence.hyper_lr == 0.3
    with pytest.raises(TypeError, match="needs a Mode"):
        BilevelSearch.for_mode(model, MeanFieldGuide(model), Coefficients(), progress=False)

"""The outer loop: every strategy by name, checkpoint and resume."""

from __future__ import annotations

import pytest
import torch

from bnas_pyro import BilevelSearch, Coefficients, SearchSpace
from bnas_pyro.guides import MeanFieldGuide
from bnas_pyro.hypergradients import available_strategies
from bnas_pyro.models import BayesianSupernet, NormalLikelihood

STRATEGIES = ["joint", "greedy", "drmad", "hoag", "unrolled", "random"]


def data(n: int = 32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    y = torch.tanh(x[:, 0]) + 0.3 * torch.randn(n, generator=g)
    return x, y


def make_search(strategy: str, init_seed: int = 0, **kwargs) -> BilevelSearch:
    """A two-primitive supernet (so h has structure logits too) with minibatches."""
    space = SearchSpace({"x": 3, "y": 1}, [("x", "y", ["linear", "tanh"])])
    model = BayesianSupernet(space, likelihood=NormalLikelihood(precision=4.0),
                             precision="group")
    guide = MeanFieldGuide(model, init_scale=0.1, generator=torch.Generator().manual_seed(init_seed))
    options = dict(inner_steps=4, outer_steps=6, lr=5e-3, hyper_lr=0.05, batch_size=16,
                   progress=False, seed=0)
    options.update(kwargs)
    return BilevelSearch(model, guide, Coefficients(c_prior=0.5), hypergradient=strategy,
                         **options)


class Killed(Exception):
    pass


def kill_at(step: int):
    def callback(search, record):
        if record.step == step:
            raise Killed
    return callback


def test_every_strategy_is_available_by_name():
    assert set(STRATEGIES) <= set(available_strategies())
    with pytest.raises(ValueError, match="unknown hypergradient 'nope'"):
        make_search("nope")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_killed_and_resumed_run_ends_with_the_same_h(strategy, tmp_path):
    x, y = data()
    reference = make_search(strategy)
    ref = reference.run(x, y)

    killed = make_search(strategy, checkpoint_dir=tmp_path, checkpoint_every=2,
                         callbacks=[kill_at(3)])
    with pytest.raises(Killed):
        killed.run(x, y)
    # a fresh process: new objects, different initial theta, state only from the checkpoint
    resumed = make_search(strategy, init_seed=1, checkpoint_dir=tmp_path, checkpoint_every=2)
    assert not torch.equal(resumed.guide.loc, reference.guide.loc)
    result = resumed.run(x, y, resume=True)

    assert len(result.history) == len(ref.history) == 6
    for name, p in reference.model.hyper.named_parameters():
        q = dict(resumed.model.hyper.named_parameters())[name]
        assert torch.equal(p.detach(), q.detach()), (strategy, name, p, q)
    assert torch.equal(reference.guide.loc.detach(), resumed.guide.loc.detach())
    assert [r.Q for r in result.history] == [r.Q for r in ref.history]
    # the run really moved h away from its initial log A = 0
    assert any(v != 0.0 for v in ref.history[-1].hyper["log_precision"])


def test_hoag_state_is_checkpointed(tmp_path):
    x, y = data()
    search = make_search("hoag", checkpoint_dir=tmp_path, checkpoint_every=1, outer_steps=3)
    search.run(x, y)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["strategy"]
    assert state["step"] == 3
    assert state["tolerance"] == pytest.approx(0.1 * 0.9**3)
    assert state["solution"] is not None


def test_random_search_ends_holding_its_best_point():
    x, y = data()
    search = make_search("random", outer_steps=8)
    result = search.run(x, y)
    candidates = [r.extra["candidate_Q"] for r in result.history]
    best = max(range(len(candidates)), key=candidates.__getitem__)
    assert result.final_Q == max(candidates)
    assert result.history[-1].hyper == result.history[best].hyper
    # draws are from the documented box
    for r in result.history:
        assert all(-2.0 <= v <= 10.0 for v in r.hyper["log_precision"])
        assert all(-3.0 <= v <= 3.0 for v in r.hyper["structure_logits"])


def test_hyper_bounds_project_every_step():
    x, y = data()
    search = make_search("greedy", hyper_lr=2.0, hyper_bounds={"log_precision": (-0.5, 0.5)})
    result = search.run(x, y)
    values = [v for r in result.history for v in r.hyper["log_precision"]]
    assert min(values) >= -0.5 and max(values) <= 0.5
    assert max(abs(v) for v in values) == 0.5  # a step of 2.0 does hit the box
    with pytest.raises(ValueError, match="unknown hyperparameter in hyper_bounds"):
        make_search("joint", hyper_bounds={"nope": (0, 1)})


def test_fixed_noise_makes_the_objectives_deterministic():
    x, y = data()
    fixed = make_search("joint", fixed_noise=True)
    fixed.prepare(x, y)
    batch = (x, y, x.shape[0])

    def value(search):
        with torch.no_grad():
            return float(search.inner_objective(None, batch))

    assert value(fixed) == value(fixed)
    fresh = make_search("joint")
    fresh.prepare(x, y)
    assert value(fresh) != value(fresh)


# ---------------------------------------------------------------------------- the seams
def test_the_search_is_what_a_strategy_may_use():
    from bnas_pyro.hypergradients import SearchState

    search = make_search("greedy")
    assert isinstance(search, SearchState)
    assert search.hyper_names() == [n for n, p in search.model.hyper.named_parameters()
                                    if p.requires_grad]


def test_lr_schedule_factor_sets_both_step_sizes_at_every_outer_step():
    x, y = data()
    seen = []

    def record_lr(search, record):
        seen.append((search.inner_optimizer.param_groups[0]["lr"],
                     search.hyper_optimizer.param_groups[0]["lr"]))

    search = make_search("joint", lr_schedule=lambda k, n: 0.5 ** k, callbacks=[record_lr])
    search.run(x, y)
    assert seen == [pytest.approx((5e-3 * 0.5 ** k, 0.05 * 0.5 ** k)) for k in range(6)]
    with pytest.raises(ValueError, match="lr_schedule"):
        make_search("joint", lr_schedule=lambda k, n: float("nan")).run(x, y)


def test_lr_schedule_torch_scheduler_is_stepped_and_resumed(tmp_path):
    x, y = data()
    make = lambda optimizer: torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.1)  # noqa: E731
    reference = make_search("greedy", lr_schedule=make)
    ref = reference.run(x, y)
    # StepLR: the step sizes fall by 10 after outer steps 2 and 4 (6 steps in all)
    assert reference.inner_optimizer.param_groups[0]["lr"] == pytest.approx(5e-3 * 0.1 ** 3)
    assert reference.hyper_optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * 0.1 ** 3)
    killed = make_search("greedy", lr_schedule=make, checkpoint_dir=tmp_path, checkpoint_every=2,
                         callbacks=[kill_at(3)])
    with pytest.raises(Killed):
        killed.run(x, y)
    resumed = make_search("greedy", lr_schedule=make, checkpoint_dir=tmp_path, checkpoint_every=2)
    out = resumed.run(x, y, resume=True)
    for a, b in zip(ref.model.hyper.parameters(), out.model.hyper.parameters()):
        assert torch.equal(a, b)
    assert resumed.inner_optimizer.param_groups[0]["lr"] == pytest.approx(5e-3 * 0.1 ** 3)
    with pytest.raises(TypeError, match="LRScheduler"):
        make_search("joint", lr_schedule=lambda optimizer: 0.5)


def test_comb_targets_are_checked_by_position():
    from bnas_pyro.structure_targets import StructureDistribution

    with pytest.raises(TypeError, match=r"comb_targets\[1\] is a dict"):
        make_search("joint", comb_targets=[StructureDistribution({"x->y": [0.9, 0.1]}), {"x->y": 1}])
    with pytest.raises(ValueError, match="edge 'x->z'"):
        make_search("joint", comb_targets=[StructureDistribution({"x->z": [0.9, 0.1]})])


def test_a_target_with_the_wrong_kl_signature_is_refused_at_construction():
    class TwoArguments:
        def check(self, space):
            pass

        def kl_from_prior(self, model, num_samples):
            return torch.zeros(())

    with pytest.raises(TypeError, match=r"comb_targets\[0\] is a TwoArguments"):
        make_search("joint", comb_targets=[TwoArguments()])


def test_the_strategies_see_the_scheduled_step_size():
    x, y = data()
    seen = []

    def record_lr(search, record):
        seen.append(search.lr)

    search = make_search("greedy", lr_schedule=lambda k, n: 0.5 ** k, callbacks=[record_lr])
    search.run(x, y)
    assert seen == pytest.approx([5e-3 * 0.5 ** k for k in range(6)])
    # random search restarts theta from its first state at every candidate: the step size stays
    # the scheduled one
    seen.clear()
    search = make_search("random", lr_schedule=lambda k, n: 0.5 ** k, callbacks=[record_lr])
    search.run(x, y)
    assert [g["lr"] for g in search.inner_optimizer.param_groups] == [pytest.approx(5e-3 * 0.5 ** 5)]

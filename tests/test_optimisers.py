"""bnas_pyro.optimisers.adam: torch's fused Adam where it exists, the same Adam either way."""

import pytest
import torch

from bnas_pyro.optimisers import adam

TORCH = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])


def _steps(opt, a, b, gen, steps):
    """Adam steps on a quadratic with a noisy gradient; the parameters after each step."""
    out = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        noise = torch.randn(a.numel() + b.numel(), generator=gen)
        ((a - 1).pow(2).sum() + (3 * b).pow(2).sum() + (noise[:a.numel()] * a).sum()
         + (noise[a.numel():] * b).sum()).backward()
        opt.step()
        out.append(torch.cat([a.detach(), b.detach()]).clone())
    return torch.stack(out)


def _trajectory(optimizer_of, steps=25, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.nn.Parameter(torch.randn(300, generator=gen))
    b = torch.nn.Parameter(torch.randn(7, generator=gen))
    opt = optimizer_of([a, b])
    return _steps(opt, a, b, gen, steps), opt, (a, b, gen)


@pytest.mark.skipif(TORCH < (2, 4), reason="torch has no fused Adam on the CPU before 2.4")
def test_fused_on_the_cpu_where_torch_has_it():
    p = torch.nn.Parameter(torch.zeros(3))
    assert adam([p], lr=0.1).defaults["fused"] is True
    assert adam([{"params": [p], "lr": 0.2}]).defaults["fused"] is True


def test_same_trajectory_as_torch_adam_to_rounding():
    fused, _, _ = _trajectory(lambda ps: adam(ps, lr=0.05, betas=(0.8, 0.99)))
    plain, _, _ = _trajectory(lambda ps: torch.optim.Adam(ps, lr=0.05, betas=(0.8, 0.99)))
    assert not torch.equal(fused[0], torch.zeros_like(fused[0]))
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)


def test_checkpoint_moves_between_fused_and_plain():
    """A state_dict of either loads into the other, and the run goes on as it would have."""
    whole, _, _ = _trajectory(lambda ps: torch.optim.Adam(ps, lr=0.05), steps=20)
    first, plain, (a, b, gen) = _trajectory(lambda ps: torch.optim.Adam(ps, lr=0.05), steps=10)
    resumed = adam([a, b], lr=0.05)
    resumed.load_state_dict(plain.state_dict())
    torch.testing.assert_close(_steps(resumed, a, b, gen, 5), whole[10:15], rtol=1e-5, atol=1e-5)
    back = torch.optim.Adam([a, b], lr=0.05)
    back.load_state_dict(resumed.state_dict())
    torch.testing.assert_close(_steps(back, a, b, gen, 5), whole[15:], rtol=1e-5, atol=1e-5)
    assert float(back.state_dict()["state"][0]["step"]) == 20


def test_own_choices_and_non_float_parameters_are_left_alone():
    p = torch.nn.Parameter(torch.zeros(3))
    assert not adam([p], foreach=True).defaults.get("fused")
    assert not adam([p], fused=False).defaults.get("fused")
    c = torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))
    assert not adam([c]).defaults.get("fused")


def test_falls_back_where_torch_refuses_the_fused_kernel(monkeypatch):
    real = torch.optim.Adam

    class NoFused(real):
        def __init__(self, params, **options):
            if options.get("fused"):
                raise RuntimeError("`fused=True` requires all the params to be floating point "
                                   "Tensors of supported devices")
            super().__init__(params, **options)

    monkeypatch.setattr(torch.optim, "Adam", NoFused)
    opt = adam([torch.nn.Parameter(torch.zeros(3))], lr=0.1)
    assert isinstance(opt, NoFused) and not opt.defaults.get("fused")
    assert opt.defaults["lr"] == 0.1


@pytest.mark.skipif(TORCH < (2, 4), reason="torch has no fused Adam on the CPU before 2.4")
def test_the_default_search_and_darts_step_with_the_fused_kernel(monkeypatch):
    from bnas_pyro.app.builders import build_parts
    from bnas_pyro.app.config import default_config
    from bnas_pyro.app.drivers import make_search
    from bnas_pyro.search.darts import DartsSearch

    config = default_config()
    parts = build_parts(config)
    search = make_search(config, parts.model, parts.guide, parts.mode, parts.strategy,
                         parts.inner_steps, parts.outer_steps, None, False, [])
    inner = search.inner_optimizer
    while not isinstance(inner, torch.optim.Optimizer):
        inner = inner.base
    assert inner.defaults["fused"] is True and search.hyper_optimizer.defaults["fused"] is True
    built = []
    real = torch.optim.Adam

    class Recording(real):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(torch.optim, "Adam", Recording)
    data = parts.data
    DartsSearch(parts.space, data.task, epochs=1, batch_size=256).run(
        data.x_train[:256], data.y_train[:256], data.x_val[:64], data.y_val[:64])
    assert len(built) == 2 and all(opt.defaults["fused"] is True for opt in built)

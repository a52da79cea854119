"""The multistart guide (METHOD.md section 3) against closed-form Bayesian linear regression.

For y = Phi w + eps, w ~ N(0, A^{-1} I), eps ~ N(0, b_n^{-1} I) the loss -log p(y, w) is quadratic with
Hessian H = A I + b_n Phi^T Phi everywhere, gradient descent is the affine map
w -> mu + (I - beta H)(w - mu) (mu the posterior mean), and q_t = N(mu - M^t mu, s0^2 M^2t) with
M = I - beta H: the entropy after tau steps is exactly S_0 + tau log|det M|, and the ELBO of q_t is
log p(y) - KL(q_t || N(mu, H^{-1})).  Those are the oracles here.
"""

import math
import re
import sys
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
from closed_form import log_evidence, posterior_precision

from bnas_pyro import Coefficients, InnerLoop, SearchSpace, estimate_elbo, trace_terms
from bnas_pyro.entropy import (StepSizeError, StepSizeWarning, gaussian_entropy, log_det_probe,
                               power_iteration)
from bnas_pyro.guides import MultistartGuide
from bnas_pyro.models import BayesianSupernet, NormalLikelihood

A, NOISE = 1.0, 4.0  # prior precision, noise precision b_n


def blr_data(n: int, d: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) * 0.5 + 0.7 + rng.standard_normal(n) / math.sqrt(NOISE)
    phi = np.hstack([X, np.ones((n, 1))])  # the linear primitive's flat weights: [weight..., bias]
    return X, y, phi


def blr_model(d: int) -> BayesianSupernet:
    space = SearchSpace({"x": d, "y": 1}, [("x", "y", ["linear"])])
    model = BayesianSupernet(space, likelihood=NormalLikelihood(precision=NOISE),
                             init_log_precision=math.log(A)).double()
    with torch.no_grad():  # log b_n is computed in float32 before .double(): make it exact
        model.hyper.log_noise_precision.fill_(math.log(NOISE))
        model.hyper.log_precision.fill_(math.log(A))
    return model


def log_joint(phi, y, w):
    """log N(y; Phi w, 1/b_n) + log N(w; 0, 1/A), closed form."""
    n, P = phi.shape
    r = y - phi @ w
    return (0.5 * n * math.log(NOISE / (2 * math.pi)) - 0.5 * NOISE * r @ r
            + 0.5 * P * math.log(A / (2 * math.pi)) - 0.5 * A * w @ w)


def gd_iterate(phi, y, w0, beta, steps):
    """Gradient descent on -log p(y, w) in closed form: mu + (I - beta H)^t (w0 - mu), per row."""
    H = posterior_precision(phi, A, NOISE)
    mu = np.linalg.solve(H, NOISE * phi.T @ y)
    M = np.linalg.matrix_power(np.eye(len(mu)) - beta * H, steps)
    return mu + (w0 - mu) @ M.T


# ------------------------------------------------------------------------------ the probe itself
def test_literal_two_product_probe_equals_one_product_form():
    g = torch.Generator().manual_seed(0)
    B = torch.randn(8, 8, generator=g, dtype=torch.float64)
    H = B @ B.T + torch.eye(8, dtype=torch.float64)
    hvp = lambda v: v @ H  # noqa: E731  (H symmetric: row-wise H v)
    r0 = torch.randn(5, 8, generator=g, dtype=torch.float64)
    beta = 0.3 / float(torch.linalg.eigvalsh(H).max())
    one = log_det_probe(hvp, r0, beta)
    two = log_det_probe(hvp, r0, beta, literal=True)
    torch.testing.assert_close(one, two, rtol=1e-10, atol=1e-12)
    # and both are r0^T (-beta H - beta^2 H^2) r0
    M = -beta * H - beta**2 * H @ H
    torch.testing.assert_close(one, ((r0 @ M) * r0).sum(-1), rtol=1e-10, atol=1e-12)


def test_probe_is_unbiased_for_the_second_order_bound():
    g = torch.Generator().manual_seed(1)
    B = torch.randn(6, 6, generator=g, dtype=torch.float64)
    H = B @ B.T + 0.5 * torch.eye(6, dtype=torch.float64)
    beta = 0.2 / float(torch.linalg.eigvalsh(H).max())
    r0 = torch.randn(20000, 6, generator=g, dtype=torch.float64)
    est = log_det_probe(lambda v: v @ H, r0, beta)
    bound = float(-beta * torch.trace(H) - beta**2 * torch.trace(H @ H))
    se = float(est.std() / math.sqrt(len(est)))
    assert abs(float(est.mean()) - bound) < 4 * se, (float(est.mean()), bound, se)


# --------------------------------------------------------------------- entropy over the steps
def test_accumulated_entropy_matches_sum_of_exact_log_dets():
    """S_tau - S_0 against tau log|det(I - beta H)| (H constant: BLR), within 5%.

    The probe estimates the bound -beta Tr H - beta^2 Tr(HH), not the log-det; at
    beta = 0.02 / lambda_max the bound is within 1% of the exact log-det (asserted below), and
    50 restarts x 4 probes x 40 steps = 8000 probes put the noise at about 0.6%.
    """
    X, y, phi = blr_data(40, 10, seed=0)
    H = posterior_precision(phi, A, NOISE)
    eig = np.linalg.eigvalsh(H)
    beta = 0.02 / eig.max()
    exact = np.log1p(-beta * eig).sum()
    bound = (-beta * eig - (beta * eig) ** 2).sum()
    assert abs(bound - exact) < 0.01 * abs(exact)

    tau, k = 40, 50
    model = blr_model(10)
    guide = MultistartGuide(model, num_restarts=k, step_size=beta, init_scale=1.0, num_probes=4,
                            generator=torch.Generator().manual_seed(0))
    assert float(guide.initial_entropy) == pytest.approx(
        11 * 0.5 * math.log(2 * math.pi * math.e), rel=1e-12)  # S_0 of N(0, I_11)
    w0 = guide.restarts().numpy().copy()
    x_t, y_t = torch.tensor(X), torch.tensor(y)
    torch.manual_seed(0)
    for _ in range(tau):
        guide.step(x_t, y_t)
    estimate = float(guide.entropy - guide.initial_entropy)
    assert guide.num_steps == tau and len(guide.history) == tau
    assert abs(estimate - tau * exact) < 0.05 * abs(tau * exact), (estimate, tau * exact)
    # unbiased for the bound: within 4 standard errors of tau * bound
    assert abs(estimate - tau * bound) < 4 * guide.entropy_se, (estimate, tau * bound,
                                                               guide.entropy_se)
    # the k points are exact gradient-descent iterates of -log p(y, w)
    np.testing.assert_allclose(guide.restarts().numpy(), gd_iterate(phi, y, w0, beta, tau),
                               rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------- step-size check
def test_power_iteration_finds_the_exact_top_eigenvalue():
    X, y, phi = blr_data(40, 10, seed=0)
    top = np.linalg.eigvalsh(posterior_precision(phi, A, NOISE)).max()
    guide = MultistartGuide(blr_model(10), num_restarts=3, step_size=1e-4, init_scale=1.0)
    lam = guide.lambda_max(torch.tensor(X), torch.tensor(y), num_iters=500, tol=1e-12)
    np.testing.assert_allclose(lam.numpy(), top, rtol=1e-6)


def test_power_iteration_keeps_the_sign_of_a_negative_dominant_eigenvalue():
    Q, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(2),
                                       dtype=torch.float64))
    S = Q @ torch.diag(torch.tensor([-7.0, 3.0, 1.0, 0.5, -2.0], dtype=torch.float64)) @ Q.T
    lam, vec = power_iteration(lambda v: v @ S, torch.ones(2, 5, dtype=torch.float64),
                               num_iters=400, tol=1e-14)
    np.testing.assert_allclose(lam.numpy(), [-7.0, -7.0], rtol=1e-8)


def test_step_size_check_names_beta_and_lambda_max():
    X, y, phi = blr_data(40, 10, seed=0)
    top = np.linalg.eigvalsh(posterior_precision(phi, A, NOISE)).max()
    x_t, y_t = torch.tensor(X), torch.tensor(y)
    beta = 1.5 / top
    guide = MultistartGuide(blr_model(10), num_restarts=4, step_size=beta, init_scale=1.0,
                            power_iters=200, power_tol=1e-9)
    before = guide.restarts().clone()
    with pytest.raises(StepSizeError) as info:
        guide.step(x_t, y_t)
    msg = str(info.value)
    assert f"beta = {beta:.4g}" in msg
    reported = float(re.search(r"lambda_max = ([0-9.e+-]+)", msg).group(1))
    assert reported == pytest.approx(top, rel=1e-3)
    assert torch.equal(guide.restarts(), before) and guide.num_steps == 0  # nothing moved

    # beta * lambda_max = 0.9 < 1 still breaks the second-order bound (valid up to 0.684)
    with pytest.raises(StepSizeError, match="lambda_max"):
        MultistartGuide(blr_model(10), num_restarts=4, step_size=0.9 / top,
                        init_scale=1.0).step(x_t, y_t)
    assert np.log(1 - 0.9) < -0.9 - 0.81 and np.log(1 - 0.6) > -0.6 - 0.36
    # a step size inside the condition passes; "warn" reports a violation and goes on
    MultistartGuide(blr_model(10), num_restarts=4, step_size=0.6 / top,
                    init_scale=1.0).step(x_t, y_t)
    warn = MultistartGuide(blr_model(10), num_restarts=4, step_size=beta, init_scale=1.0,
                           on_violation="warn")
    with pytest.warns(StepSizeWarning, match="lambda_max"):
        warn.step(x_t, y_t)
    assert warn.num_steps == 1


# ------------------------------------------------------------------------------------- ELBO
def test_elbo_estimate_against_closed_form_evidence():
    """The multistart ELBO on BLR: equal to its closed-form expectation, and below log p(y).

    E[estimate] = E_{q_tau} log p(y, w) + S_0 + tau (-beta Tr H - beta^2 Tr HH), all closed form;
    the exact ELBO of q_tau (with the exact log-det) is log p(y) - KL(q_tau || posterior).  An
    estimate that overwrote S instead of accumulating it would sit ~12 nats *above* log p(y).
    """
    X, y, phi = blr_data(40, 3, seed=0)
    P = phi.shape[1]
    H = posterior_precision(phi, A, NOISE)
    eig = np.linalg.eigvalsh(H)
    mu = np.linalg.solve(H, NOISE * phi.T @ y)
    evidence = log_evidence(phi, y, A, NOISE)
    beta, s0, tau, k = 0.1 / eig.max(), 1.0, 42, 200
    Mt = np.linalg.matrix_power(np.eye(P) - beta * H, tau)
    mean, cov = mu - Mt @ mu, s0**2 * Mt @ Mt.T
    e_log_joint = (evidence - 0.5 * P * math.log(2 * math.pi) + 0.5 * np.linalg.slogdet(H)[1]
                   - 0.5 * (np.trace(H @ cov) + (mean - mu) @ H @ (mean - mu)))
    s_0 = 0.5 * P * math.log(2 * math.pi * math.e) + P * math.log(s0)
    expected = e_log_joint + s_0 + tau * (-beta * eig - (beta * eig) ** 2).sum()
    exact_elbo = e_log_joint + s_0 + tau * np.log1p(-beta * eig).sum()
    assert exact_elbo < evidence

    model = blr_model(3)
    guide = MultistartGuide(model, num_restarts=k, step_size=beta, init_scale=s0, num_probes=4,
                            generator=torch.Generator().manual_seed(3))
    x_t, y_t = torch.tensor(X), torch.tensor(y)
    torch.manual_seed(3)
    for _ in range(tau):
        guide.step(x_t, y_t)
    estimate = guide.elbo(x_t, y_t)
    joints = np.array([log_joint(phi, y, w) for w in guide.restarts().numpy()])
    assert estimate == pytest.approx(joints.mean() + float(guide.entropy), abs=1e-8)
    se = math.sqrt(joints.var(ddof=1) / k + guide.entropy_se**2)
    assert guide.elbo_standard_error(x_t, y_t) == pytest.approx(se, rel=1e-8)
    assert abs(estimate - expected) < 4 * se, (estimate, expected, se)
    assert estimate < evidence, (estimate, evidence)       # a lower bound on log p(y) ...
    assert estimate > evidence - 6.0, (estimate, evidence)  # ... and not a vacuous one
    assert abs(estimate - exact_elbo) < 1.0, (estimate, exact_elbo)


# ------------------------------------------------------------------------- as a Pyro guide
@pytest.fixture
def small_blr():
    X, y, phi = blr_data(20, 3, seed=4)
    model = blr_model(3)
    guide = MultistartGuide(model, num_restarts=5, step_size=1e-3, init_scale=0.5,
                            generator=torch.Generator().manual_seed(4))
    x_t, y_t = torch.tensor(X), torch.tensor(y)
    for _ in range(3):
        guide.step(x_t, y_t)
    return model, guide, x_t, y_t, phi, y


def test_pyro_trace_elbo_and_trace_terms_see_the_entropy(small_blr):
    model, guide, x_t, y_t, phi, y = small_blr
    S = float(guide.entropy)
    for r in range(guide.num_restarts):
        w = guide.restarts()[r].numpy()
        with guide.pinned(r):
            loss = pyro.infer.Trace_ELBO().loss(model, guide, x_t, y_t)
            terms = trace_terms(model, guide, x_t, y_t)
        assert loss == pytest.approx(-(log_joint(phi, y, w) + S), rel=1e-10)
        prior = 0.5 * 4 * math.log(A / (2 * math.pi)) - 0.5 * A * w @ w
        assert terms.kl_weights.item() == pytest.approx(-S - prior, rel=1e-10)
        assert terms.elbo.item() == pytest.approx(log_joint(phi, y, w) + S, rel=1e-10)
    # uniform restart choice: the Monte Carlo ELBO converges to the average over restarts
    torch.manual_seed(0)
    mc, se = estimate_elbo(model, guide, x_t, y_t, num_particles=2000)
    assert abs(mc - guide.elbo(x_t, y_t)) < 4 * se + 1e-9


def test_inner_loop_adapter_runs_gradient_descent(small_blr):
    model, guide, x_t, y_t, phi, y = small_blr
    w0 = guide.restarts().numpy().copy()
    S = float(guide.entropy)
    loop = InnerLoop(model, guide, Coefficients(), lr=0.01,
                     optimizer_factory=guide.optimizer_factory())
    for _ in range(4):
        loop.step(x_t, y_t, num_data=len(y))
    assert guide.num_steps == 3 + 4
    np.testing.assert_allclose(guide.restarts().numpy(), gd_iterate(phi, y, w0, 1e-3, 4),
                               rtol=1e-10, atol=1e-12)
    assert float(guide.entropy) < S  # a contraction: each log|I - beta H| < 0 (H positive definite)


def test_structure_choice_dtype_and_adapter():
    """A space with a structure choice: Concrete q(Gamma) alongside the k points, in float32."""
    torch.manual_seed(0)
    x = torch.randn(30, 2)
    y = torch.tanh(x[:, 0]) + 0.1 * torch.randn(30)
    space = SearchSpace({"x": 2, "y": 1}, [("x", "y", ["linear", "tanh", "constant"])])
    model = BayesianSupernet(space, likelihood=NormalLikelihood(precision=10.0))
    guide = MultistartGuide(model, num_restarts=4, step_size=1e-3)
    assert guide.points.dtype == torch.float32 and guide.entropy.dtype == torch.float32
    loop = InnerLoop(model, guide, Coefficients(c_temp=1.0), lr=0.05,
                     optimizer_factory=guide.optimizer_factory())
    logits = guide.structure.logits.detach().clone()
    points = guide.restarts().clone()
    for _ in range(5):
        assert math.isfinite(loop.step(x, y))
    assert guide.num_steps == 5
    assert not torch.equal(guide.structure.logits.detach(), logits)  # Adam moved q(Gamma)
    assert not torch.equal(guide.restarts(), points)                  # descent moved W
    terms = guide.elbo_terms(x, y)
    assert torch.isfinite(terms.kl_structure) and torch.isfinite(terms.elbo)
    assert guide._vmap_ok  # the restarts were evaluated in one vmapped pass
    guide64 = MultistartGuide(blr_model(3), num_restarts=2)
    assert guide64.points.dtype == torch.float64


# ---------------------------------------------------------------------------- the example
def test_evidence_example_runs_reduced():
    """examples/evidence_estimates.py at a reduced size: every method beats the constant predictor."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
    import evidence_estimates as example

    results = example.main([
        "--widths", "5", "20", "--restarts", "2", "--sgd-steps", "300", "--map-steps", "100",
        "--mf-steps", "150", "--mf-restarts", "1", "--ms-steps", "40", "--ms-patience", "10",
        "--elbo-particles", "20"])
    run = results[0]
    y_sd = example.load_split(0).y_test.std().item() * example.load_split(0).y_std
    for name, outcome in run["comparison"].items():
        assert all(0 < r < y_sd for r in outcome.rmse), (name, outcome.rmse, y_sd)
        assert all(math.isfinite(e) and e < 0 for e in outcome.evidence), (name, outcome.evidence)
    assert set(run["chosen"].values()) <= {5, 20}


def test_plugs_into_bilevel_search(small_blr):
    """BilevelSearch wraps its inner optimiser through the guide's hook: each inner step is a descent step."""
    from bnas_pyro.guides.multistart import MultistartOptimizer
    from bnas_pyro.search import bilevel

    model, guide, x_t, y_t, phi, y = small_blr
    log_A = model.hyper.log_precision.detach().clone()
    search = bilevel.BilevelSearch(model, guide, hypergradient="joint", inner_steps=5,
                                   outer_steps=3, progress=False, learn=["log_precision"])
    assert isinstance(search.inner_optimizer, MultistartOptimizer)  # wrapped by the guide's hook
    result = search.run(x_t, y_t)
    assert guide.num_steps == 3 + 15 and len(guide.history) == 18
    assert all(math.isfinite(r.Q) for r in result.history)
    assert not torch.equal(model.hyper.log_precision.detach(), log_A)  # h moved too


def test_unrolled_strategies_refuse_the_multistart_guide(small_blr):
    from bnas_pyro import BilevelSearch

    model, guide, *_ = small_blr
    for name in ("unrolled", "drmad"):
        with pytest.raises(ValueError, match=f"own dynamics.*{name}"):
            BilevelSearch(model, guide, hypergradient=name, progress=False)


def test_multistart_search_resumes_exactly(tmp_path):
    """Killed at outer step 3 and resumed: the same restarts, entropy and h as without the kill
    (the power iteration's warm start is part of the saved state)."""
    from bnas_pyro import BilevelSearch

    X, y, _ = blr_data(20, 3, seed=4)
    x_t, y_t = torch.tensor(X), torch.tensor(y)

    def search(outer_steps, directory):
        model = blr_model(3)
        guide = MultistartGuide(model, num_restarts=4, step_size=1e-3, init_scale=0.5,
                                check_every=4, generator=torch.Generator().manual_seed(1))
        return BilevelSearch(model, guide, hypergradient="greedy", inner_steps=5,
                             outer_steps=outer_steps, progress=False, learn=["log_precision"],
                             checkpoint_dir=directory, checkpoint_every=3, seed=2)

    full = search(6, tmp_path / "full")
    full.run(x_t, y_t)
    search(3, tmp_path / "killed").run(x_t, y_t)
    resumed = search(6, tmp_path / "killed")
    resumed.run(x_t, y_t, resume=True)
    assert torch.equal(full.guide.restarts(), resumed.guide.restarts())
    assert torch.equal(full.guide.entropy, resumed.guide.entropy)
    assert torch.equal(full.model.hyper.log_precision, resumed.model.hyper.log_precision)

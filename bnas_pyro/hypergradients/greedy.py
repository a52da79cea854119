"""``greedy``: the one-step unroll of Luketina et al. (2016) (METHOD.md section 5).

After the eta inner steps (the search's optimiser, any), the hypergradient differentiates Q
through one more step of gradient ascent on L:

    theta' = theta + beta * P * grad_theta L(theta, h)
    h <- h + beta_h * d/dh Q(theta'(h), h)
       = h + beta_h * [ d_h Q(theta', h) + beta (d^2_{h theta} L(theta, h))^T d_theta Q(theta', h) ]

P is the inner optimiser's diagonal preconditioner held fixed: 1 for SGD; for Adam
1 / (sqrt(v_hat) + eps) from its second-moment state, so the look-ahead is the size of the step
the search actually takes (with Adam, beta * grad L alone would be scaled by the data size and
land far from theta).  Adam's momentum is ignored.

It sees only the last step's dependence of theta on h, so it is exact only when the Hessian of L
is the identity (times 1/beta) and one step reaches the optimum; in general it keeps the direct
term d_h Q and underestimates the indirect effect of h through theta.  When Q = L (evidence
mode, METHOD.md section 4), d_theta Q = 0 at the inner optimum, so greedy has the same fixed
point as joint ELBO maximisation (``tests/test_hypergradients.py`` checks this).

Bias, measured against the exact derivative of Q(T^eta(theta_0, h), h) with eta = 20 SGD steps
from a cold start (``tests/test_hypergradients.py::test_measured_bias_of_approximate_methods``:
float64 Bayesian linear regression, one log-precision), relative error:

    ==========  ============================  ==============================
    guide       Q = hold-out log-likelihood   Q = loglik - 2 KL, c_reg = 0.5
    ==========  ============================  ==============================
    Delta       0.63                          0.022
    mean-field  0.35                          0.30
    ==========  ============================  ==============================

With the hold-out Q, d_h Q = 0 and the whole hypergradient is the indirect term, of which one
step recovers only a part (37% with the Delta guide); with the weighted Q the direct term
dominates and greedy is close.  Always the right sign there.
Cost: eta inner steps plus about one extra gradient with a second-order backward per outer step
(about 1.15x eta plain steps at eta = 20-50, ``benchmarks/hypergrad_cost.py``).
"""

from __future__ import annotations

import torch

from .base import (GradientStrategy, HypergradientEstimate, SearchState, grads_or_none,
                   grads_or_zeros)


class GreedyStrategy(GradientStrategy):
    """One-step look-ahead hypergradient.

    Args:
        step_size: beta of the look-ahead step (default: the search's ``lr``).
    """

    name = "greedy"

    def __init__(self, step_size: float | None = None):
        self.step_size = step_size

    def hypergradient(self, search: SearchState) -> HypergradientEstimate:
        L = search.run_inner_steps(search.inner_steps)
        beta = self.step_size if self.step_size is not None else search.lr
        theta = search.theta()
        inner = search.inner_objective(theta, search.next_batch())
        grads = grads_or_zeros(inner, list(theta.values()), create_graph=True)
        scale = _preconditioner(search.inner_optimizer, theta)
        theta_next = {k: v + beta * (g if scale[k] is None else scale[k] * g)
                      for (k, v), g in zip(theta.items(), grads)}
        Q = search.outer_objective(theta_next)
        hyper = grads_or_none(Q, search.hyper_parameters())
        if search.inner_steps == 0:
            L = float(inner.detach())
        return HypergradientEstimate(hyper, L=L, Q=float(Q.detach()))


def _preconditioner(optimizer, theta: dict) -> dict:
    """Adam's 1 / (sqrt(v_hat) + eps) per parameter (``None``: no preconditioning, as for SGD)."""
    optimizer = getattr(optimizer, "base", optimizer)  # e.g. MultistartOptimizer wraps one
    out = {k: None for k in theta}
    if not isinstance(optimizer, torch.optim.Adam):
        return out
    beta2, eps = optimizer.param_groups[0]["betas"][1], optimizer.param_groups[0]["eps"]
    for k, p in theta.items():
        state = optimizer.state.get(p)
        if state and "exp_avg_sq" in state and float(state["step"]) > 0:
            v_hat = state["exp_avg_sq"] / (1 - beta2 ** float(state["step"]))
            out[k] = 1.0 / (v_hat.sqrt() + eps)
    return out

"""``greedy``: the one-step unroll of Luketina et al. (2016) (METHOD.md section 5).

    theta' = theta + beta * grad_theta L(theta, h)        (one inner step of gradient ascent)
    h <- h + beta_h * d/dh Q(theta'(h), h)

It sees only the last inner step's dependence of theta on h, so it is exact only when the
Hessian of L is the identity (times 1/beta); in general it is biased towards the direct term
d_h Q and underestimates the indirect effect of h through theta.  Cost: about one extra
gradient (with a second-order backward) per outer step.
"""

from __future__ import annotations

import torch

from .base import HypergradientStrategy, OuterStepInfo


class GreedyStrategy(HypergradientStrategy):
    name = "greedy"

    def __init__(self, step_size: float | None = None):
        self.step_size = step_size

    def outer_step(self, search) -> OuterStepInfo:
        L = search.run_inner_steps(search.inner_steps)
        beta = self.step_size if self.step_size is not None else search.lr
        theta = search.theta()
        batch = search.next_batch()
        inner = search.inner_objective(theta, batch)
        grads = torch.autograd.grad(inner, list(theta.values()), create_graph=True)
        theta_next = {k: v + beta * g for (k, v), g in zip(theta.items(), grads)}
        Q = search.outer_objective(theta_next)
        search.apply_hypergradient(torch.autograd.grad(Q, search.hyper_parameters(),
                                                       allow_unused=True))
        return OuterStepInfo(L=L, Q=float(Q.detach()))

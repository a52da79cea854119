"""Reverse mode through eta steps of gradient ascent on L: the machinery of ``unrolled`` and ``drmad``.

The inner operator is plain (stochastic) gradient ascent with step size beta (METHOD.md
section 5, "eta steps of stochastic gradient ascent on L"):

    theta_{t+1} = theta_t + beta * g_t(theta_t, h),    g_t = grad_theta L(theta_t, h; batch_t, eps_t)

and the outer objective is Q(theta_eta, h).  Reverse mode (the adjoint recursion) starts from
d_theta = dQ/dtheta(theta_eta), d_h = dQ/dh(theta_eta) and runs t = eta-1, ..., 0:

    d_h     <- d_h     + beta * (d g_t / d h)^T      d_theta    = d_h + beta * grad_h <g_t, d_theta>
    d_theta <- d_theta + beta * (d g_t / d theta)^T  d_theta    = d_theta + beta * H_t d_theta

each a Hessian-vector product (one forward with ``create_graph`` and one double backward).  The
only thing the recursion needs from the forward pass is the point theta_t at which g_t is
evaluated: ``unrolled`` stores it (exact), ``drmad`` replaces it by the straight line from
theta_0 to theta_eta (approximate, memory O(|theta|)).

g_t is stochastic (minibatch, reparameterised samples); for the derivative of the *same*
function that the forward pass computed, every step's minibatch and random-generator state are
recorded and replayed (common random numbers), so the reverse pass sees exactly the noise eps_t
of the forward pass and the run's random stream is left where the forward pass left it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from bnas_pyro.random_state import RandomState

from .base import Batch, SearchState, add_grads, dot, grads_or_none, grads_or_zeros


@dataclass
class InnerStep:
    """What replays one inner step: its minibatch and the random state its noise came from."""

    batch: Batch
    noise: RandomState


@dataclass
class SGDRun:
    """The record of eta forward steps: one :class:`InnerStep` per step, theta_0, and (if kept)
    the whole trajectory theta_0 .. theta_{eta-1}; ``L`` is the last inner objective."""

    steps: list[InnerStep]
    theta0: list[Tensor]
    trajectory: list[list[Tensor]] | None
    L: float


def sgd_forward(search: "SearchState", num_steps: int, step_size: float,
                keep_trajectory: bool) -> SGDRun:
    """``num_steps`` steps theta <- theta + step_size * grad L on the guide's live parameters.

    Numerically the same steps as ``search.run_inner_steps`` with ``inner_optimizer="sgd"``.
    """
    params = list(search.theta().values())
    device = params[0].device if params else None
    theta0 = [p.detach().clone() for p in params]
    trajectory: list[list[Tensor]] | None = [] if keep_trajectory else None
    steps: list[InnerStep] = []
    L = float("nan")
    for t in range(num_steps):
        if trajectory is not None:
            trajectory.append([p.detach().clone() for p in params])
        batch = search.next_batch()
        noise = RandomState.capture(device)
        objective = search.inner_objective(None, batch)
        grads = grads_or_zeros(objective, params)
        L = float(objective.detach())
        if not torch.isfinite(objective.detach()):
            raise FloatingPointError(
                f"the inner objective became non-finite ({L}) at unrolled step {t}: plain gradient "
                f"ascent diverged; lower the step size lr (it must stay below 2 / the largest "
                f"curvature of L)")
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.add_(g, alpha=step_size)
        steps.append(InnerStep(batch, noise))
    return SGDRun(steps, theta0, trajectory, L)


def outer_gradients(search: "SearchState") -> tuple[Tensor, list[Tensor], list[Tensor | None]]:
    """Q at the guide's live theta and h, with dQ/dtheta (zeros where unused) and dQ/dh
    (``None`` where Q does not depend on that hyperparameter)."""
    params = list(search.theta().values())
    hyper = search.hyper_parameters()
    Q = search.outer_objective()
    grads = grads_or_none(Q, params + hyper)
    d_theta = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    return Q.detach(), d_theta, grads[len(params):]


def reverse_mode(search: "SearchState", run: SGDRun, point: Callable[[int], Sequence[Tensor]],
                 step_size: float, d_theta: list[Tensor],
                 d_h: list[Tensor | None]) -> list[Tensor | None]:
    """The adjoint recursion above, with g_t evaluated at ``point(t)``; returns d_h = dQ/dh
    (``None`` for a hyperparameter that neither Q nor any step depends on)."""
    names = list(search.theta().keys())
    hyper = search.hyper_parameters()
    d_theta = [d.detach() for d in d_theta]
    d_h = [None if d is None else d.detach() for d in d_h]
    for t in reversed(range(len(run.steps))):
        step = run.steps[t]
        leaves = [x.detach().requires_grad_(True) for x in point(t)]
        with step.noise.replay():
            objective = search.inner_objective(dict(zip(names, leaves)), step.batch)
        g = grads_or_zeros(objective, leaves, create_graph=True)
        back = grads_or_none(dot(g, d_theta), leaves + hyper)
        d_theta = [d if b is None else d + step_size * b for d, b in zip(d_theta, back[:len(leaves)])]
        d_h = add_grads(d_h, back[len(leaves):], step_size)
    return d_h

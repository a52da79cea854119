"""``hoag``: the implicit-function hypergradient with an inexact linear solve (Pedregosa 2016).

METHOD.md section 5.  At a stationary point theta*(h) of L (grad_theta L = 0), the implicit
function theorem gives d theta*/dh = -(d^2_{theta theta} L)^{-1} d^2_{theta h} L, hence

    grad_h Q = d_h Q - (d^2_{theta h} L)^T (d^2_{theta theta} L)^{-1} d_theta Q.

The linear system (-d^2_{theta theta} L) v = d_theta Q (positive definite near a maximum of L) is
solved by conjugate gradient on Hessian-vector products (double backward, no Hessian is formed),
and then grad_h Q = d_h Q + d_h <grad_theta L, v>.  Following HOAG, the solve is inexact: CG
stops when ||residual|| <= tol_k ||d_theta Q||, with tol_k = max(tol_0 * decay^k, min_tolerance)
shrinking over the outer steps k, and starts from the previous solution (warm start).  The outer
step counter, the current tolerance and the warm-start vector are the strategy's state (saved in
checkpoints).  The inner steps are the search's optimiser (any), eta per outer step; they only
have to bring theta near theta*(h).

One evaluation of L (with a fixed minibatch and fixed random state: common random numbers) is
differentiated with ``create_graph`` once and reused by every Hessian-vector product of the solve,
so all of them see the same sample of the stochastic objective.  If CG meets non-positive
curvature (theta far from a maximum, or a noisy Hessian) it stops there and keeps the current
iterate (``extra["hoag_negative_curvature"]``); CG also never returns an iterate worse than
zero (see :func:`conjugate_gradient`).  ``damping`` adds lambda I to the system: it bounds the
Newton-like extrapolation (-d^2 L)^{-1} d_theta Q in directions of small or noisy curvature.
HOAG's premise is a converged inner problem; where the inner steps cannot converge some
directions (plain SGD on the scales of a mean-field q, whose curvature is O(1) against O(A) for
the means), damping matters.  Measured on the Annals of OR problem
(``examples/hypergradient_comparison.py``, 5 seeds, 50 x 50 steps): best ELBO -70.0 +- 6.6
without damping (negative curvature in most steps) and -61.3 +- 4.1 with ``damping=10``
(greedy -61.9, unrolled -61.8).  The default is 0, the exact system.

Bias: exact at theta = theta*(h) with tol -> 0 (the finite-difference test agrees to < 1e-8
relative error with tol = 1e-12); otherwise its error is that of theta - theta*(h) (first order)
plus the CG residual.  Cost: eta inner steps, plus one gradient with graph, one gradient of Q and
(CG iterations + 1) Hessian-vector products per outer step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from .base import (GradientStrategy, HypergradientEstimate, SearchState, add_grads, dot,
                   grads_or_none, grads_or_zeros)


@dataclass
class CGResult:
    """Solution, iterations used, final relative residual, and whether p^T A p <= 0 stopped it."""

    x: Tensor
    iterations: int
    relative_residual: float
    negative_curvature: bool


def conjugate_gradient(matvec: Callable[[Tensor], Tensor], b: Tensor, x0: Tensor | None = None,
                       rtol: float = 1e-3, max_iterations: int = 100) -> CGResult:
    """Solve A x = b for symmetric positive definite A given only ``matvec(v) = A v``.

    Stops when ||b - A x|| <= rtol ||b||, after ``max_iterations``, or when a search direction
    has p^T A p <= 0 (A not positive definite there).  Safeguards for a noisy or indefinite A:
    a warm start ``x0`` is used only if its residual is below ||b|| (else CG starts from 0), and
    the iterate with the smallest residual is returned, so the relative residual is never
    above 1 (the zero vector's).
    """
    b_norm = float(b.norm())
    if b_norm == 0.0:
        return CGResult(torch.zeros_like(b), 0, 0.0, False)
    x, r = torch.zeros_like(b), b.clone()
    if x0 is not None and torch.isfinite(x0).all() and float(x0.norm()) > 0:
        r0 = b - matvec(x0)
        if float(r0.norm()) < b_norm:
            x, r = x0.clone(), r0
    p = r.clone()
    rs = float(r @ r)
    best_x, best_rs = x, rs
    iterations = 0
    negative = False
    while iterations < max_iterations and rs ** 0.5 > rtol * b_norm:
        Ap = matvec(p)
        pAp = float(p @ Ap)
        if not pAp > 0.0:
            negative = True
            break
        alpha = rs / pAp
        x = x + alpha * p
        r = r - alpha * Ap
        rs_new = float(r @ r)
        p = r + (rs_new / rs) * p
        rs = rs_new
        iterations += 1
        if rs < best_rs:
            best_x, best_rs = x, rs
    return CGResult(best_x, iterations, best_rs ** 0.5 / b_norm, negative)


class HoagStrategy(GradientStrategy):
    """Implicit hypergradient, CG on Hessian-vector products, shrinking tolerance.

    ``tolerance`` (attribute) is tol_k of the next outer step; it is multiplied by ``decay``
    after each step and saved with ``step`` and the warm-start vector in ``state_dict()``.

    Args:
        tolerance: tol_0, the relative CG residual at the first outer step.
        decay: tol_k = tol_0 * decay^k.
        min_tolerance: floor of tol_k.
        max_iterations: CG iterations per outer step at most.
        damping: lambda in (-d^2 L + lambda I) v = d_theta Q (0: the exact system).
        warm_start: start CG from the previous outer step's solution.
    """

    name = "hoag"

    def __init__(self, tolerance: float = 1e-1, decay: float = 0.9, min_tolerance: float = 1e-6,
                 max_iterations: int = 100, damping: float = 0.0, warm_start: bool = True):
        if not (tolerance > 0 and 0 < decay <= 1 and min_tolerance >= 0 and max_iterations >= 1
                and damping >= 0):
            raise ValueError("hoag needs tolerance > 0, 0 < decay <= 1, min_tolerance >= 0, "
                             "max_iterations >= 1, damping >= 0")
        self.initial_tolerance = float(tolerance)
        self.decay, self.min_tolerance = float(decay), float(min_tolerance)
        self.max_iterations, self.damping = int(max_iterations), float(damping)
        self.warm_start = bool(warm_start)
        self.step = 0
        self.tolerance = max(self.initial_tolerance, self.min_tolerance)
        self.solution: Tensor | None = None

    def hypergradient(self, search: SearchState) -> HypergradientEstimate:
        L_last = search.run_inner_steps(search.inner_steps)
        params = list(search.theta().values())
        hyper = search.hyper_parameters()

        # one sample of L, differentiated once with a graph; every HVP below reuses it
        inner = search.inner_objective(None, search.next_batch())
        g = grads_or_zeros(inner, params, create_graph=True)
        Q = search.outer_objective()
        dQ = grads_or_none(Q, params + hyper)
        dQ_theta = [torch.zeros_like(p) if d is None else d for p, d in zip(params, dQ)]
        dQ_h = dQ[len(params):]

        shapes = [p.shape for p in params]
        sizes = [p.numel() for p in params]

        def unflatten(v: Tensor) -> list[Tensor]:
            return [c.view(s) for c, s in zip(v.split(sizes), shapes)]

        def matvec(v: Tensor) -> Tensor:  # (-d^2 L + damping I) v
            hv = grads_or_zeros(dot(g, unflatten(v)), params, retain_graph=True)
            out = -torch.cat([h.reshape(-1) for h in hv])
            return out + self.damping * v if self.damping else out

        b = torch.cat([d.reshape(-1) for d in dQ_theta]).detach()
        x0 = self.solution if (self.warm_start and self.solution is not None
                               and self.solution.shape == b.shape) else None
        tol = self.tolerance
        cg = conjugate_gradient(matvec, b, None if x0 is None else x0.to(b), tol,
                                self.max_iterations)
        mixed = grads_or_none(dot(g, unflatten(cg.x.detach())), hyper)
        grads = add_grads(dQ_h, mixed)
        self.solution = cg.x.detach().clone()
        self.step += 1
        self.tolerance = max(tol * self.decay, self.min_tolerance)
        extra: dict[str, Any] = {"hoag_tolerance": tol, "hoag_cg_iterations": cg.iterations,
                                 "hoag_residual": cg.relative_residual}
        if cg.negative_curvature:
            extra["hoag_negative_curvature"] = True
        L = float(inner.detach()) if search.inner_steps == 0 else L_last
        return HypergradientEstimate(grads, L=L, Q=float(Q.detach()), extra=extra)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "tolerance": self.tolerance,
                "solution": None if self.solution is None else self.solution.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state.get("step", 0))
        self.tolerance = float(state.get("tolerance", self.tolerance))
        solution = state.get("solution")
        self.solution = None if solution is None else solution.clone()

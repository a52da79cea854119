"""Entropy of gradient descent: probe estimates of log|I - beta H| and step-size checks (METHOD.md section 3).

A gradient step ``W -> W - beta grad L(W)`` is a map with Jacobian ``I - beta H`` (H the Hessian of
the loss L at W).  Pushing a distribution q_t through it changes the entropy by

    S_{t+1} - S_t = E_{q_t} log|det(I - beta H)|  >=  E_{q_t} [ -beta Tr H - beta^2 Tr(H H) ],

the bound holding when every eigenvalue b of beta H satisfies b <= 0.684 (log(1 - b) >= -b - b^2
for every b < 0 and for 0 <= b <= 0.684; above it the bound overestimates the entropy change, by
0.59 nats per eigenvalue at b = 0.9).  METHOD.md section 3 states ``beta < 1/lambda_max(H)`` and
``beta < 1/C`` (C the gradient's Lipschitz constant, locally the largest |eigenvalue| of H); the
second-order bound needs the stricter ``beta * lambda_max <= 0.68`` (:data:`BOUND_LIMIT`), which
the checks here enforce together with ``beta * C < 1``.

The functions here work on *rows*: a batch of k independent points W^1..W^k stacked as a (k, P)
tensor, with ``hvp`` mapping a (k, P) tensor V to the row-wise products (H(W^r) V^r)_r (one double
backward through the sum of the k losses gives exactly that, since the Hessian of a sum of functions
of separate rows is block diagonal).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

HVP = Callable[[Tensor], Tensor]

#: largest beta * lambda for which log(1 - b) >= -b - b^2 (the root is at b = 0.6837)
BOUND_LIMIT = 0.68

__all__ = [
    "BOUND_LIMIT", "HVP", "StepSizeError", "StepSizeWarning", "gaussian_entropy", "log_det_probe",
    "power_iteration", "step_size_message", "step_size_violated",
]


class StepSizeError(ValueError):
    """The step size beta breaks beta < 1/lambda_max(H) (METHOD.md section 3)."""


class StepSizeWarning(UserWarning):
    """Warning form of :class:`StepSizeError` (``on_violation="warn"``)."""


def gaussian_entropy(scale: Tensor) -> Tensor:
    """Entropy of N(mu, diag scale^2): sum_i [1/2 log(2 pi e) + log scale_i]."""
    return (0.5 * math.log(2 * math.pi * math.e) + scale.log()).sum()


def log_det_probe(hvp: HVP, probe: Tensor, step_size: float, literal: bool = False) -> Tensor:
    """Unbiased probe estimate of the bound -beta Tr H - beta^2 Tr(HH) on log|I - beta H|, per row.

    METHOD.md section 3: r0 ~ N(0, I), r1 = r0 - beta H r0, r2 = r1 - beta H r1,

        estimate = r0^T (-2 r0 + 3 r1 - r2) = -beta r0^T H r0 - beta^2 r0^T H^2 r0,

    whose expectation over r0 (any probe with E[r0 r0^T] = I) is -beta Tr H - beta^2 Tr(HH).
    ``literal=True`` computes exactly that expression with two Hessian-vector products.  The
    default uses the symmetry of H, r0^T H^2 r0 = |H r0|^2, to get the *same* random variable from
    one product and without the cancellation of -2 r0 + 3 r1 - r2 (three O(|r0|) vectors whose
    combination is O(beta)):

        estimate = -beta r0^T (H r0) - beta^2 |H r0|^2.

    Args:
        hvp: row-wise Hessian-vector product, (k, P) -> (k, P).
        probe: r0, shape (k, P).
        step_size: beta.
        literal: use the two-product form of METHOD.md verbatim.

    Returns:
        shape (k,): one estimate per row.
    """
    beta = step_size
    h0 = hvp(probe)
    if literal:
        r1 = probe - beta * h0
        r2 = r1 - beta * hvp(r1)
        return (probe * (-2 * probe + 3 * r1 - r2)).sum(-1)
    return -beta * (probe * h0).sum(-1) - beta**2 * h0.pow(2).sum(-1)


def power_iteration(hvp: HVP, start: Tensor, num_iters: int = 30, tol: float = 1e-6,
                    ) -> tuple[Tensor, Tensor]:
    """Dominant eigenvalue (largest |lambda|, with its sign) of each row's Hessian, by power iteration.

    v <- H v / |H v|, lambda = v^T H v (Rayleigh quotient), stopping when every row's lambda
    changes by less than ``tol`` relatively.  For a positive semi-definite H (a convex loss) the
    dominant eigenvalue is lambda_max; in general its magnitude is the local gradient Lipschitz
    constant C >= lambda_max, so ``beta * |lambda| < 1`` implies both conditions of METHOD.md
    section 3.  The Rayleigh quotient approaches |lambda| from below: warm-start from the
    previous eigenvectors (the returned ``vectors``) when checking repeatedly along a trajectory.

    Args:
        hvp: row-wise Hessian-vector product, (k, P) -> (k, P).
        start: initial vectors, shape (k, P) (need not be normalised; a zero row is replaced by
            a constant one).
        num_iters: at most this many products.
        tol: relative tolerance on the eigenvalue change.

    Returns:
        ``(eigenvalues (k,), unit eigenvectors (k, P))``.
    """
    v = start.detach().clone()
    zero = v.norm(dim=-1) == 0
    if zero.any():
        v[zero] = 1.0
    v = v / v.norm(dim=-1, keepdim=True)
    lam = None
    for _ in range(max(int(num_iters), 1)):
        hv = hvp(v).detach()
        new = (v * hv).sum(-1)
        norm = hv.norm(dim=-1, keepdim=True)
        v = torch.where(norm > 0, hv / norm.clamp_min(torch.finfo(hv.dtype).tiny), v)
        if lam is not None and bool(((new - lam).abs() <= tol * new.abs().clamp_min(1e-30)).all()):
            lam = new
            break
        lam = new
    # one last Rayleigh quotient at the final vector (the sign of a negative dominant eigenvalue
    # flips v every iteration; the quotient is sign-safe)
    lam = (v * hvp(v).detach()).sum(-1)
    return lam, v


def step_size_violated(step_size: float, eigenvalue: float) -> bool:
    """beta * C >= 1, or beta * lambda_max > BOUND_LIMIT for a positive dominant eigenvalue."""
    return step_size * abs(eigenvalue) >= 1 or step_size * eigenvalue > BOUND_LIMIT


def step_size_message(step_size: float, eigenvalue: float, where: str = "") -> str:
    """The error text for a violated step-size condition, naming beta and lambda_max."""
    c = abs(eigenvalue)
    limit = BOUND_LIMIT if eigenvalue > 0 else 1.0
    inv = f"{limit / c:.4g}" if c > 0 else "inf"
    sign = "" if eigenvalue >= 0 else (
        f" (the dominant eigenvalue is negative, {eigenvalue:.4g}: its magnitude is the local "
        f"gradient Lipschitz constant C, and beta < 1/C is required too)")
    return (f"step size beta = {step_size:.4g} violates beta * lambda_max(H) <= {BOUND_LIMIT} "
            f"(and beta < 1/C){where}: power "
            f"iteration on Hessian-vector products estimates lambda_max = {c:.4g}{sign}, so beta "
            f"must be below {inv} (beta * lambda_max = {step_size * c:.3g}). Beyond it the entropy "
            f"bound log|I - beta H| >= -beta Tr H - beta^2 Tr(HH) fails and gradient descent can "
            f"diverge (METHOD.md section 3); lower the step size")

"""``joint``: single-level optimisation of theta and h together (METHOD.md section 4).

Each inner step draws one Monte Carlo trace and moves both at once, from the same terms:

    theta <- theta + step * grad_theta L(theta, h)                       (L = loglik - c_reg KL)
    h     <- h     + step * grad_h [c_train loglik - c_prior KL + log p(h)
                                    - c_comb sum_{p'} KL(p(Gamma|h) || p')]   (the partial of Q)

With c_reg = c_train = c_prior = 1 and c_comb = 0 both are the gradient of the ELBO (+ log p(h)),
so this *is* the bilevel problem (the theorem of METHOD.md section 4: evidence maximisation is
single-level ELBO maximisation).  Otherwise h follows only the direct (partial) gradient of Q at
the current theta, ignoring how theta*(h) moves with h: an alternating first-order scheme, cheaper
and more biased than ``greedy``.  A hold-out Q (``validation=True``) has no direct dependence on
the precisions, so ``joint`` always uses the training-batch form above.

When c_prior = c_train c_reg (evidence mode, and any schedule that keeps that ratio), the data and
KL part of Q is c_train L, so both gradients come from one backward pass through the draw:
grad_theta and grad_h of L + H / c_train, with grad_h scaled back by c_train (H = log p(h) -
c_comb sum KL, which does not depend on theta).  Otherwise L and Q take a backward pass each.

An outer step reports L and the training-batch Q of its last inner step's draw (both before
that step's update: one more forward pass would only redraw them); a hold-out Q is evaluated
on the validation split after the last step.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from bnas_pyro.coefficients import Coefficients
from bnas_pyro.objectives import ElboTerms

from .base import HypergradientStrategy, OuterStepInfo, SearchState, grads_or_none, grads_or_zeros


class JointStrategy(HypergradientStrategy):
    name = "joint"
    data_parallel = True

    def outer_step(self, search: SearchState) -> OuterStepInfo:
        L = Q = float("nan")
        c = search.coefficients
        last = search.inner_steps - 1
        for step in range(search.inner_steps):
            theta = stepped_theta(search)
            hyper = search.hyper_parameters()
            terms = search.terms()
            hyper_values: list[Tensor] = []

            def hyper_terms() -> Tensor:   # its value kept for Q (a c_comb term draws noise)
                value = search.hyper_terms()
                hyper_values.append(value.detach())
                return value

            g_theta, g_hyper = joint_gradients(terms, c, theta, hyper, hyper_terms)
            search.inner_optimizer.zero_grad(set_to_none=True)
            for p, g in zip(theta, g_theta):
                p.grad = -g
            search.inner_optimizer.step()
            search.apply_hypergradient(g_hyper)
            if step < last:   # L and Q of the last draw only: no copy to the host before it
                continue
            detached = terms.detach()
            L = float(detached.inner(c))
            if not search.validation:
                if not hyper_values:
                    with torch.no_grad():
                        hyper_values.append(search.hyper_terms())
                Q = float(detached.outer(c) + hyper_values[0])
        return OuterStepInfo(L=L, Q=search.evaluate_outer() if search.validation else Q)


def stepped_theta(search: SearchState) -> list[Tensor]:
    """The tensors of theta that the inner optimiser moves along their gradients.  A guide whose
    wrapper moves some by dynamics of its own (the natural-gradient steps of a discrete q(s))
    leaves those out of the param groups, and their gradients are then not computed."""
    stepped = {id(p) for group in search.inner_optimizer.param_groups for p in group["params"]}
    return [p for p in search.theta().values() if id(p) in stepped]


def joint_gradients(terms: ElboTerms, c: Coefficients, theta: Sequence[Tensor],
                    hyper: Sequence[Tensor], hyper_terms: Callable[[], Tensor],
                    single_pass: bool | None = None) -> tuple[list[Tensor], list[Tensor | None]]:
    """``(grad_theta L, grad_h Q)`` at one draw of the terms (zeros / ``None`` where unused).

    ``single_pass`` (default: whenever c_prior = c_train c_reg and c_train != 0) takes both from
    one backward pass of L + H / c_train, grad_h scaled by c_train; else one pass for each.
    """
    inner = terms.inner(c)
    if single_pass is None:
        single_pass = bool(hyper) and c.c_train != 0.0 and c.c_prior == c.c_train * c.c_reg
    if single_pass:
        both = grads_or_none(inner + hyper_terms() / c.c_train, list(theta) + list(hyper))
        g_theta = [torch.zeros_like(p) if g is None else g for p, g in zip(theta, both)]
        return g_theta, [None if g is None else g * c.c_train for g in both[len(theta):]]
    g_theta = grads_or_zeros(inner, theta, retain_graph=bool(hyper))
    g_hyper = grads_or_none(terms.outer(c) + hyper_terms(), hyper) if hyper else []
    return g_theta, g_hyper

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
"""

from __future__ import annotations

from .base import HypergradientStrategy, OuterStepInfo, SearchState, grads_or_none, grads_or_zeros


class JointStrategy(HypergradientStrategy):
    name = "joint"
    data_parallel = True

    def outer_step(self, search: SearchState) -> OuterStepInfo:
        L = float("nan")
        c = search.coefficients
        for _ in range(search.inner_steps):
            theta = list(search.theta().values())
            hyper = search.hyper_parameters()
            terms = search.terms()
            inner = terms.inner(c)
            outer = terms.outer(c) + search.hyper_terms()
            g_theta = grads_or_zeros(inner, theta, retain_graph=True)
            g_hyper = grads_or_none(outer, hyper) if hyper else []
            search.inner_optimizer.zero_grad(set_to_none=True)
            for p, g in zip(theta, g_theta):
                p.grad = -g
            search.inner_optimizer.step()
            search.apply_hypergradient(g_hyper)
            L = float(inner.detach())
        return OuterStepInfo(L=L, Q=search.evaluate_outer())

"""``joint``: single-level optimisation, h moved by the same gradient as theta (METHOD.md section 4).

Each inner step ascends L(theta, h) + log p(h) - c_comb sum KL(p(Gamma|h) || p') in theta and h
together.  With c_reg = c_train = c_prior = 1 and c_comb = 0 this *is* the bilevel problem
(the theorem of METHOD.md section 4: evidence maximisation is single-level ELBO maximisation).
Otherwise it is a heuristic that ignores c_train and c_prior.
"""

from __future__ import annotations

from .base import HypergradientStrategy, OuterStepInfo


class JointStrategy(HypergradientStrategy):
    name = "joint"

    def outer_step(self, search) -> OuterStepInfo:
        L = float("nan")
        for _ in range(search.inner_steps):
            search.inner_optimizer.zero_grad(set_to_none=True)
            search.hyper_optimizer.zero_grad(set_to_none=True)
            objective = search.inner_objective() + search.hyper_terms()
            (-objective).backward()
            search.inner_optimizer.step()
            search.hyper_optimizer.step()
            search.project_hyper()
            L = float(objective.detach())
        return OuterStepInfo(L=L, Q=search.evaluate_outer())

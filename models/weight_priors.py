"""Weight priors (METHOD.md section 2).

- plain (default):          w ~ N(0, A^{-1})
- structure-scaled:         w^{j,k}_l ~ N(0, (gamma^{j,k}_l)^2 A^{-1})
- optional hyperprior:      A^{-1} ~ InvGamma(lambda_1, lambda_2), i.e. A ~ Gamma(lambda_1, rate lambda_2),
                            which enters the outer objective as log p(h).

All weights are one vectorised sample site ``weights`` of shape ``(num_parameters,)``: one
site instead of one per tensor keeps Pyro's per-site overhead out of the SVI step.
"""

from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from bnas_pyro.distributions import StructureScaledNormal

from .protocol import SupernetModel, not_overridden

WEIGHT_SITE = "weights"


def log_gamma_per_parameter(model: SupernetModel, log_gammas: Sequence[Tensor | None]) -> Tensor:
    """log gamma of the primitive each scalar weight belongs to, shape ``(num_parameters,)``."""
    pieces = [lg if lg is not None else model.hyper.logits(e).new_zeros(1)
              for e, lg in enumerate(log_gammas)]
    return torch.cat(pieces, -1)[model.supernet.group_index]


class GaussianWeightPrior:
    """Gaussian prior on all weights with precision A from ``model.hyper``.

    Args:
        scaled: use the structure-scaled variance gamma^2 / A.  Ill-posed with a guide whose
            weights ignore gamma (E[1/gamma^2] is infinite under a Concrete distribution at
            temperatures <= 2, METHOD.md section 2), so it requires a structure-coupled guide.
        hyperprior: ``(lambda_1, lambda_2)`` of InvGamma on A^{-1}, or ``None``.
    """

    def __init__(self, scaled: bool = False, hyperprior: tuple[float, float] | None = None):
        self.scaled = bool(scaled)
        if hyperprior is not None:
            l1, l2 = hyperprior
            if not (l1 > 0 and l2 > 0):
                raise ValueError(f"hyperprior (lambda_1, lambda_2) must be > 0, got {hyperprior}")
        self.hyperprior = hyperprior

    @property
    def requires_structure_coupled_guide(self) -> bool:
        return self.scaled

    def distribution(self, model: SupernetModel, log_gammas: Sequence[Tensor | None]):
        scale = model.hyper.precision_per_parameter().rsqrt()
        if self.scaled:
            return StructureScaledNormal(torch.zeros_like(scale), scale,
                                         log_gamma_per_parameter(model, log_gammas))
        return dist.Normal(torch.zeros_like(scale), scale).to_event(1)

    def supports_fused_terms(self) -> bool:
        return not_overridden(self, GaussianWeightPrior, "__call__", "distribution")

    def fused_distribution(self, model: SupernetModel, log_gamma: Tensor):
        """:meth:`distribution` with log gamma given per group (edge, primitive), unvalidated."""
        scale = model.hyper.precision_per_parameter().rsqrt()
        if self.scaled:
            return StructureScaledNormal(torch.zeros_like(scale), scale,
                                         log_gamma.index_select(0, model.supernet.group_index),
                                         validate_args=False)
        return dist.Normal(torch.zeros_like(scale), scale, validate_args=False).to_event(1)

    def fused_log_precision(self, model: SupernetModel) -> Tensor | None:
        """log A per parameter for the plain prior N(0, A^{-1}); ``None`` when scaled by gamma."""
        return None if self.scaled else model.hyper.log_precision_per_parameter()

    def __call__(self, model: SupernetModel, log_gammas: Sequence[Tensor | None]) -> Tensor:
        return pyro.sample(WEIGHT_SITE, self.distribution(model, log_gammas))

    def log_hyperprior(self, model: SupernetModel) -> Tensor:
        """log p(h) for the precision part of h (0 without a hyperprior)."""
        log_A = model.hyper.log_precision
        if self.hyperprior is None:
            return log_A.new_zeros(())
        l1, l2 = self.hyperprior
        return dist.Gamma(log_A.new_tensor(l1), log_A.new_tensor(l2)).log_prob(log_A.exp()).sum()

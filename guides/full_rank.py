"""Full-covariance Gaussian guide q(W) = N(mu, L L^T) with a Concrete structure (METHOD.md section 3).

For a linear-Gaussian model this family contains the exact posterior, so its optimal ELBO is the
log evidence.  Memory grows as P^2: meant for small models.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

from bnas_pyro.checks import check_positive
from bnas_pyro.models.weight_priors import WEIGHT_SITE

from .mean_field import _inverse_softplus, initial_locations
from .structure import ConcreteStructureGuide


class FullRankGuide(nn.Module):
    """q(W) = MultivariateNormal(mu, L L^T), L lower triangular with a positive diagonal.

    The KL against the diagonal Gaussian prior is analytic (``bnas_pyro.distributions``).
    """

    couples_weights_to_structure = False

    def __init__(self, model, init_scale: float = 1e-2, temperature: float | None = None,
                 learn_temperature: bool = False, init_loc: Tensor | None = None,
                 init_logits: Tensor | None = None, generator: torch.Generator | None = None):
        check_positive("init_scale", init_scale)
        super().__init__()
        object.__setattr__(self, "model", model)
        P = model.layout.num_parameters
        self.structure = ConcreteStructureGuide(model, temperature, learn_temperature, init_logits)
        self.loc = nn.Parameter(initial_locations(model, init_loc, generator))
        self.diag_unconstrained = nn.Parameter(torch.full_like(self.loc, _inverse_softplus(init_scale)))
        self.offdiag = nn.Parameter(self.loc.new_zeros(P, P))

    @property
    def scale_tril(self) -> Tensor:
        return self.offdiag.tril(-1) + torch.diag_embed(softplus(self.diag_unconstrained))

    def supports_fused_terms(self) -> bool:
        """Opt-in to :func:`bnas_pyro.objectives.fused_terms` (see ``MeanFieldGuide``)."""
        return type(self).forward is FullRankGuide.forward and self.structure.supports_fused_terms()

    def fused_structure(self) -> tuple[Tensor, Tensor]:
        return self.structure.fused_sample()

    def fused_weight_distribution(self, log_gamma: Tensor):
        return dist.MultivariateNormal(self.loc, scale_tril=self.scale_tril, validate_args=False)

    def forward(self, x: Tensor, y: Tensor | None = None, num_data: int | None = None) -> None:
        self.structure.sample()
        pyro.sample(WEIGHT_SITE, dist.MultivariateNormal(self.loc, scale_tril=self.scale_tril))

    def weight_mean(self) -> Tensor:
        return self.loc.detach()

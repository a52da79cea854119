"""MAP guide: q(W) = Delta(w_hat), with a Concrete q(Gamma) (METHOD.md section 4, "MAP").

With a point mass the weight part of the ELBO is log p(w_hat | h) + E log p(y | w_hat): maximum a
posteriori.  The structure keeps a Concrete q, since a point mass on the simplex has an unbounded
Concrete density at its vertices for c_temp < 1.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from bnas_pyro.models.weight_priors import WEIGHT_SITE

from .mean_field import initial_locations
from .structure import ConcreteStructureGuide


class DeltaGuide(nn.Module):
    """q(W) = Delta(w_hat) (MAP weights), q(Gamma) Concrete."""

    couples_weights_to_structure = False

    def __init__(self, model, temperature: float | None = None, learn_temperature: bool = False,
                 init_loc: Tensor | None = None, init_logits: Tensor | None = None,
                 generator: torch.Generator | None = None):
        super().__init__()
        object.__setattr__(self, "model", model)
        self.structure = ConcreteStructureGuide(model, temperature, learn_temperature, init_logits)
        self.loc = nn.Parameter(initial_locations(model, init_loc, generator))

    def supports_fused_terms(self) -> bool:
        """Opt-in to :func:`bnas_pyro.objectives.fused_terms` (see ``MeanFieldGuide``)."""
        return type(self).forward is DeltaGuide.forward and self.structure.supports_fused_terms()

    def fused_structure(self) -> tuple[Tensor, Tensor]:
        return self.structure.fused_sample()

    def fused_weight_distribution(self, log_gamma: Tensor):
        return dist.Delta(self.loc, event_dim=1, validate_args=False)

    def forward(self, x: Tensor, y: Tensor | None = None, num_data: int | None = None) -> None:
        self.structure.sample()
        pyro.sample(WEIGHT_SITE, dist.Delta(self.loc, event_dim=1))

    def weight_mean(self) -> Tensor:
        return self.loc.detach()

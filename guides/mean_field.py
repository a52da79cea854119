"""Mean-field guide q(W, Gamma) = N(mu, diag s^2) x prod_e Concrete(s_q^e, t_q) (METHOD.md section 3)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

from bnas_pyro.checks import check_positive
from bnas_pyro.distributions import StructureScaledNormal
from bnas_pyro.models.protocol import not_overridden
from bnas_pyro.models.weight_priors import WEIGHT_SITE, log_gamma_per_parameter

from .structure import ConcreteStructureGuide


def _inverse_softplus(x: float) -> float:
    return float(torch.tensor(x).expm1().log())


def initial_locations(model, init_loc: Tensor | None, generator: torch.Generator | None) -> Tensor:
    """Variational means start at N(0, init_std) per parameter (Glorot-like per primitive), in
    the dtype and on the device of the model's hyperparameters."""
    like = model.hyper.log_precision
    if init_loc is not None:
        loc = torch.as_tensor(init_loc, dtype=like.dtype, device=like.device).clone()
        if loc.shape != (model.layout.num_parameters,):
            raise ValueError(f"init_loc must have shape ({model.layout.num_parameters},), "
                             f"got {tuple(loc.shape)}")
        return loc
    std = model.layout.init_std.to(like.dtype)
    return (torch.randn(std.shape, generator=generator, dtype=like.dtype) * std).to(like.device)


class MeanFieldGuide(nn.Module):
    """Diagonal Gaussian weights and Concrete structure.

    q(w_i) = N(mu_i, s_i^2), independent of Gamma; with ``couple_to_structure=True`` instead
    q(w_l | gamma) = N(gamma_l mu_l, gamma_l^2 s_l^2), the form the structure-scaled prior needs
    (METHOD.md section 2).  Against a Gaussian prior the weight KL is analytic:
    KL = 1/2 sum(a s^2 + a mu^2 - 1 - ln a - ln s^2) with a = A (METHOD.md section 3).

    Args:
        model: the :class:`~bnas_pyro.models.BayesianSupernet`.
        init_scale: initial s for every weight.
        temperature, learn_temperature, init_logits: see :class:`ConcreteStructureGuide`.
        couple_to_structure: use q(w | gamma) as above.
        init_loc: initial mu (default: random, Glorot-like); ``generator`` seeds it.
    """

    def __init__(self, model, init_scale: float = 1e-2, temperature: float | None = None,
                 learn_temperature: bool = False, couple_to_structure: bool = False,
                 init_loc: Tensor | None = None, init_logits: Tensor | None = None,
                 generator: torch.Generator | None = None):
        check_positive("init_scale", init_scale)
        super().__init__()
        object.__setattr__(self, "model", model)
        self.structure = ConcreteStructureGuide(model, temperature, learn_temperature, init_logits)
        self.loc = nn.Parameter(initial_locations(model, init_loc, generator))
        self.scale_unconstrained = nn.Parameter(
            torch.full_like(self.loc, _inverse_softplus(init_scale)))
        self.couples_weights_to_structure = bool(couple_to_structure)

    @property
    def scale(self) -> Tensor:
        return softplus(self.scale_unconstrained)

    def weight_distribution(self, log_gammas):
        if self.couples_weights_to_structure:
            return StructureScaledNormal(self.loc, self.scale,
                                         log_gamma_per_parameter(self.model, log_gammas))
        return dist.Normal(self.loc, self.scale).to_event(1)

    def supports_fused_terms(self) -> bool:
        """Opt-in to :func:`bnas_pyro.objectives.fused_terms` (the fast path of the ELBO terms);
        a subclass that changes what the guide samples keeps the Pyro path."""
        return (all(getattr(type(self), n) is getattr(MeanFieldGuide, n)
                    for n in ("forward", "weight_distribution"))
                and self.structure.supports_fused_terms())

    def fused_structure(self) -> tuple[Tensor, Tensor]:
        return self.structure.fused_sample()

    def fused_weight_distribution(self, log_gamma: Tensor):
        """:meth:`weight_distribution` with log gamma per group (edge, primitive), unvalidated."""
        if self.couples_weights_to_structure:
            return StructureScaledNormal(self.loc, self.scale,
                                         log_gamma.index_select(0, self.model.supernet.group_index),
                                         validate_args=False)
        return dist.Normal(self.loc, self.scale, validate_args=False).to_event(1)

    def fused_weight_moments(self, log_gamma: Tensor) -> tuple[Tensor, Tensor] | None:
        """``(loc, scale)`` of :meth:`fused_weight_distribution` when it is the diagonal Normal
        (``None`` when the weights are coupled to the structure, or where a subclass gives its
        own :meth:`fused_weight_distribution`)."""
        if (self.couples_weights_to_structure
                or not not_overridden(self, MeanFieldGuide, "fused_weight_distribution")):
            return None
        return self.loc, self.scale

    def forward(self, x: Tensor, y: Tensor | None = None, num_data: int | None = None) -> None:
        log_gammas = self.structure.sample()
        pyro.sample(WEIGHT_SITE, self.weight_distribution(log_gammas))

    def weight_mean(self) -> Tensor:
        """E_q[w] with gamma at 1 (the posterior-mean weights of a chosen primitive)."""
        return self.loc.detach()

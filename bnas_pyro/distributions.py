"""Distributions the models and guides need beyond Pyro's, with their KL divergences.

- :class:`StructureScaledNormal`: ``N(gamma * loc, gamma^2 * scale^2)`` with gamma given in log
  space.  It is both the structure-scaled weight prior ``N(0, gamma^2 / A)`` and the
  structure-coupled guide ``q(w | gamma) = N(gamma mu, gamma^2 s^2)`` (METHOD.md section 2).
  Their KL is computed with gamma cancelled analytically, so it stays finite however small gamma
  gets (gamma underflows to 0 in float32 at low temperatures).
- :class:`ExpRelaxedCategorical`: the Concrete distribution in log space, as a Pyro distribution.
- ``KL(MultivariateNormal || Independent(Normal))``: the analytic KL of a full-covariance guide
  against a diagonal Gaussian prior (used by ``FullRankGuide``).
"""

from __future__ import annotations

import torch
from pyro.distributions import Normal, TorchDistribution, constraints
from pyro.distributions.torch_distribution import TorchDistributionMixin
from torch import Tensor
from torch.distributions import Independent, MultivariateNormal, register_kl
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical as _TorchExpRelaxed


class ExpRelaxedCategorical(_TorchExpRelaxed, TorchDistributionMixin):
    """Pyro wrapper of torch's ExpRelaxedCategorical: ``log gamma`` with gamma ~ Concrete(logits, t).

    Its log density is that of ``log gamma`` (the simplex density times prod_l gamma_l).
    """

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(ExpRelaxedCategorical, _instance)
        return super().expand(batch_shape, _instance=new)


class StructureScaledNormal(TorchDistribution):
    """``w ~ N(exp(log_gamma) * loc, exp(2 log_gamma) * scale^2)``, one event of shape ``(P,)``.

    Log density: ``log N(w / gamma; loc, scale) - log gamma`` summed over the event.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive,
                       "log_gamma": constraints.real}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor, log_gamma: Tensor, validate_args=None):
        self.loc, self.scale, self.log_gamma = torch.broadcast_tensors(loc, scale, log_gamma)
        super().__init__(self.loc.shape[:-1], self.loc.shape[-1:], validate_args=validate_args)

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.log_gamma.exp() * (self.loc + self.scale * eps)

    def log_prob(self, value: Tensor) -> Tensor:
        standard = value * torch.exp(-self.log_gamma)
        return (Normal(self.loc, self.scale).log_prob(standard) - self.log_gamma).sum(-1)

    @property
    def mean(self) -> Tensor:
        return self.log_gamma.exp() * self.loc

    @property
    def variance(self) -> Tensor:
        return (2 * self.log_gamma).exp() * self.scale**2

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape) + self.event_shape
        return StructureScaledNormal(self.loc.expand(shape), self.scale.expand(shape),
                                     self.log_gamma.expand(shape))


@register_kl(StructureScaledNormal, StructureScaledNormal)
def _kl_scaled_scaled(q: StructureScaledNormal, p: StructureScaledNormal) -> Tensor:
    # KL(N(gq mq, gq^2 sq^2) || N(gp mp, gp^2 sp^2)) with d = log gq - log gp, computed in log space.
    d = q.log_gamma - p.log_gamma
    ratio = torch.exp(2 * (d + q.scale.log() - p.scale.log()))
    mean_term = (torch.exp(d) * q.loc - p.loc) ** 2 / p.scale**2
    return 0.5 * (ratio + mean_term - 1 - ratio.log()).sum(-1)


@register_kl(MultivariateNormal, Independent)
def _kl_mvn_diagonal(q: MultivariateNormal, p: Independent) -> Tensor:
    base = p.base_dist
    if not isinstance(base, torch.distributions.Normal) or p.reinterpreted_batch_ndims != 1:
        raise NotImplementedError
    var = base.scale**2
    tril = q.scale_tril
    trace = (tril.pow(2).sum(-1) / var).sum(-1)
    maha = ((q.loc - base.loc) ** 2 / var).sum(-1)
    logdet_q = 2 * tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    k = q.loc.shape[-1]
    return 0.5 * (trace + maha - k + var.log().sum(-1) - logdet_q)

"""The scaled ELBO and its terms (METHOD.md sections 3 and 4).

One pass of the guide and the replayed model gives three numbers:

    log_likelihood = E_q log p(y | X, W, Gamma)                 (plate-scaled to the full data)
    kl_weights     = E_{q(Gamma)} KL(q(W | Gamma) || p(W | Gamma, h))   (analytic where possible)
    kl_structure   = KL(q(Gamma) || p(Gamma | h))                (Monte Carlo, log space)

Every objective of the method is a linear combination of them, so the KL weight is applied once,
here, to the *difference* log q - log p: never to the model or the guide alone (which would
silently change the objective).  ``ScaledELBO`` is a :class:`pyro.infer.ELBO`, so it
plugs into :class:`pyro.infer.SVI` and ``ScaledELBO(...)(model, guide)`` is an ``ELBOModule``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer import ELBO
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import Independent, Normal, kl_divergence

from bnas_pyro import distributions as _registers_kl  # noqa: F401  (KL registrations)
from bnas_pyro.coefficients import Coefficients


@dataclass
class ElboTerms:
    """The three terms of the ELBO for one (or the mean over several) Monte Carlo draws."""

    log_likelihood: Tensor
    kl_weights: Tensor
    kl_structure: Tensor

    @property
    def kl(self) -> Tensor:
        return self.kl_weights + self.kl_structure

    @property
    def elbo(self) -> Tensor:
        return self.log_likelihood - self.kl

    def inner(self, c: Coefficients) -> Tensor:
        """L = E_q log p(y|X,W,Gamma) - c_reg KL(q || p)   (METHOD.md section 4)."""
        kl = self.kl if c.c_reg == 1.0 else c.c_reg * self.kl
        return self.log_likelihood - kl

    def outer(self, c: Coefficients) -> Tensor:
        """The data and KL part of Q: c_train E_q log p - c_prior KL(q || p).

        The c_comb term and log p(h) depend on h alone; see :func:`outer_objective`.
        """
        return c.c_train * self.log_likelihood - c.c_prior * self.kl

    def detach(self) -> "ElboTerms":
        return ElboTerms(self.log_likelihood.detach(), self.kl_weights.detach(),
                         self.kl_structure.detach())

    def __add__(self, other: "ElboTerms") -> "ElboTerms":
        return ElboTerms(self.log_likelihood + other.log_likelihood,
                         self.kl_weights + other.kl_weights, self.kl_structure + other.kl_structure)

    def __truediv__(self, n: float) -> "ElboTerms":
        return ElboTerms(self.log_likelihood / n, self.kl_weights / n, self.kl_structure / n)


def _is_structure(site) -> bool:
    return site["infer"].get("bnas_role") == "structure"


#: which (q, p) distribution type pairs have an analytic KL (looked up once per pair)
_ANALYTIC_KL: dict[tuple[type, type], bool] = {}


def _site_kl(q, p, value: Tensor) -> Tensor:
    """KL(q || p) per batch element: analytic when torch/Pyro has it, else log q(v) - log p(v)."""
    key = (type(q), type(p))
    if _ANALYTIC_KL.get(key, True):
        try:
            kl = kl_divergence(q, p)
            _ANALYTIC_KL[key] = True
            return kl
        except NotImplementedError:
            _ANALYTIC_KL[key] = False
    return q.log_prob(value) - p.log_prob(value)  # Monte Carlo with the reparameterised sample


def supports_fused_terms(model, guide) -> bool:
    """Whether :func:`fused_terms` applies: model and guide both opt in, and no Pyro effect
    handler is active (a handler, e.g. ``poutine.condition`` or ``poutine.scale``, would change
    what the Pyro path computes, so it keeps the Pyro path)."""
    if _PYRO_STACK:
        return False
    m, g = getattr(model, "supports_fused_terms", None), getattr(guide, "supports_fused_terms", None)
    return m is not None and g is not None and bool(m()) and bool(g())


def fused_terms(model, guide, x: Tensor, y: Tensor, num_data: int | None = None) -> ElboTerms:
    """One Monte Carlo draw of :class:`ElboTerms` without a Pyro trace (the fast path).

    The same computation as :func:`trace_terms` for model/guide pairs that opt in, with the same
    random draws for the same random state: q(Gamma) first (one ``rand(K_e)`` per edge, in edge
    order), then W ~ q(W | Gamma); the weight KL through the same (analytic where torch has it)
    KL functions; the structure KL log q - log p at the draw (METHOD.md section 3).

    The protocol (duck-typed, so any guide can opt in):

    - guide: ``supports_fused_terms() -> bool``; ``fused_structure() -> (log_gamma, log_q)``,
      a reparameterised draw of log gamma per group (edge, primitive), shape ``(num_groups,)``
      with 0 on single-primitive edges (the order of ``model.hyper.structure_logits``), and
      log q(Gamma) at it; ``fused_weight_distribution(log_gamma)``, q(W | Gamma) as a torch
      distribution with ``rsample`` and event shape ``(P,)``; optionally
      ``fused_weight_moments(log_gamma) -> (loc, scale) | None``, the same q when it is the
      diagonal Normal N(loc, diag scale^2) (the draw and the KL then skip building it).
    - model: ``supports_fused_terms() -> bool``; ``fused_structure_log_prior(log_gamma)``;
      ``fused_normalise(log_gamma)`` (what the model does to the draw before using it);
      ``fused_weight_prior(log_gamma)``, p(W | Gamma, h) as a torch distribution;
      ``fused_weight_log_precision()``, log A per parameter when p(W | h) = N(0, A^{-1}) does
      not depend on Gamma (else ``None``; the KL against a diagonal Normal q is then the closed
      form, without building p); ``fused_log_likelihood(weights, log_gamma, x, y, num_data)``
      (scaled to the full data).
    """
    log_gamma, log_q = guide.fused_structure()
    kl_s = log_q - model.fused_structure_log_prior(log_gamma)
    moments = getattr(guide, "fused_weight_moments", None)
    moments = moments(log_gamma) if moments is not None else None
    log_precision = model.fused_weight_log_precision()
    normalised = model.fused_normalise(log_gamma)
    if moments is not None and log_precision is not None and moments[0].shape == log_precision.shape:
        loc, scale = moments
        weights = loc + torch.randn_like(loc) * scale   # Normal(loc, scale).rsample()
        kl_w = diagonal_gaussian_kl(loc, scale, log_precision)
    else:
        q_w = guide.fused_weight_distribution(log_gamma)
        weights = q_w.rsample()
        kl_w = _diagonal_gaussian_kl(q_w, log_precision)
        if kl_w is None:
            kl_w = _site_kl(q_w, model.fused_weight_prior(normalised), weights).sum()
    log_lik = model.fused_log_likelihood(weights, normalised, x, y, num_data)
    return ElboTerms(log_lik, kl_w, kl_s)


def _diagonal_gaussian_kl(q, log_precision: Tensor | None) -> Tensor | None:
    """KL(N(mu, diag s^2) || N(0, A^{-1})) = 1/2 sum(A s^2 + A mu^2 - 1 - ln A - ln s^2)
    (METHOD.md section 3) for a diagonal Normal q and a prior given by log A per parameter;
    ``None`` for any other pair."""
    if (log_precision is None or not isinstance(q, Independent)
            or not isinstance(q.base_dist, Normal) or q.reinterpreted_batch_ndims != 1
            or q.base_dist.loc.shape != log_precision.shape):
        return None
    return diagonal_gaussian_kl(q.base_dist.loc, q.base_dist.scale, log_precision)


def diagonal_gaussian_kl(mu: Tensor, s: Tensor, log_precision: Tensor) -> Tensor:
    """KL(N(mu, diag s^2) || N(0, diag A^{-1})) summed over the parameters, with log A given
    per parameter (METHOD.md section 3)."""
    var = s * s
    return 0.5 * (log_precision.exp() * (var + mu * mu) - 1 - log_precision - var.log()).sum()


def trace_terms(model, guide, *args, **kwargs) -> ElboTerms:
    """One Monte Carlo draw of :class:`ElboTerms`: trace the guide, replay the model.

    Pyro's scale (``plate`` subsampling, ``poutine.scale``) and mask apply to every site, observed
    or latent, as in :class:`pyro.infer.TraceMeanField_ELBO`.  Model/guide pairs that opt in
    (:func:`supports_fused_terms`: the built-in model with the built-in mean-field, full-rank
    and Delta guides) go through :func:`fused_terms` instead, the same draw without the trace;
    :func:`pyro_trace_terms` is always the Pyro path.
    """
    if args and len(args) <= 3 and not kwargs and supports_fused_terms(model, guide):
        x, y, n = (tuple(args) + (None, None))[:3]
        if y is not None:
            return fused_terms(model, guide, x, y, n)
    return pyro_trace_terms(model, guide, *args, **kwargs)


def pyro_trace_terms(model, guide, *args, **kwargs) -> ElboTerms:
    """:func:`trace_terms` through Pyro's trace of the guide and replay of the model, always."""
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    log_lik = kl_w = kl_s = None
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if site["is_observed"]:
            lp = scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"], site["mask"]).sum()
            log_lik = lp if log_lik is None else log_lik + lp
            continue
        guide_site = guide_trace.nodes.get(name)
        if guide_site is None or guide_site["type"] != "sample":
            raise ValueError(f"the guide does not sample the model's latent site {name!r}")
        kl = _site_kl(guide_site["fn"], site["fn"], guide_site["value"])
        kl = scale_and_mask(kl, guide_site["scale"], guide_site["mask"]).sum()
        if _is_structure(site):
            kl_s = kl if kl_s is None else kl_s + kl
        else:
            kl_w = kl if kl_w is None else kl_w + kl
    like = next(v for v in (log_lik, kl_w, kl_s, torch.zeros(())) if v is not None)
    zero = like.new_zeros(())
    return ElboTerms(zero if log_lik is None else log_lik, zero if kl_w is None else kl_w,
                     zero if kl_s is None else kl_s)


def guide_terms(model, guide, *args, **kwargs) -> ElboTerms:
    """One draw of :class:`ElboTerms` for ``guide``: its own ``objective_terms(*args, **kwargs)``
    when it has one (a guide whose bound is not a plain trace ELBO, e.g.
    ``bnas_pyro.guides.StructuredGuide``'s sum over discrete structures), else :func:`trace_terms`."""
    own = getattr(guide, "objective_terms", None)
    if own is not None:
        return own(*args, **kwargs)
    return trace_terms(model, guide, *args, **kwargs)


class ScaledELBO(ELBO):
    """The inner objective L = E_q log p(y|X,W,Gamma) - c_reg KL(q(W,Gamma) || p(W,Gamma|h)).

    With ``c_reg = 1`` this is the ELBO; with ``c_reg != 1`` it equals an ELBO on a subsample of
    size m / c_reg (a tempered posterior, METHOD.md section 4).  The Gaussian KL is analytic
    (METHOD.md section 3), the Concrete KL a reparameterised Monte Carlo estimate in log space.
    """

    def __init__(self, coefficients: Coefficients | None = None, num_particles: int = 1):
        super().__init__(num_particles=num_particles)
        self.coefficients = coefficients if coefficients is not None else Coefficients()

    def _get_trace(self, model, guide, args, kwargs):  # required by pyro.infer.ELBO
        raise NotImplementedError("ScaledELBO traces through trace_terms()")

    def terms(self, model, guide, *args, **kwargs) -> ElboTerms:
        total = None
        for _ in range(self.num_particles):
            t = guide_terms(model, guide, *args, **kwargs)
            total = t if total is None else total + t
        return total / self.num_particles if self.num_particles > 1 else total

    def differentiable_loss(self, model, guide, *args, **kwargs) -> Tensor:
        return -self.terms(model, guide, *args, **kwargs).inner(self.coefficients)

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss.detach())


@torch.no_grad()
def estimate_elbo(model, guide, *args, num_particles: int = 1000, **kwargs) -> tuple[float, float]:
    """Monte Carlo ELBO (all coefficients 1) and its standard error over ``num_particles`` draws."""
    values = torch.stack([guide_terms(model, guide, *args, **kwargs).elbo
                          for _ in range(num_particles)])
    return float(values.mean()), float(values.std() / num_particles**0.5)


def outer_objective(terms: ElboTerms, c: Coefficients, model,
                    comb_kl: Tensor | None = None) -> Tensor:
    """Q = c_train E_q log p - c_prior KL(q||p) - c_comb sum_{p'} KL(p(Gamma|h)||p') + log p(h).

    ``comb_kl`` is sum over p' in P of KL(p(Gamma|h) || p') (METHOD.md section 4).
    """
    q = terms.outer(c) + model.log_hyperprior()
    if comb_kl is not None and c.c_comb != 0.0:
        q = q - c.c_comb * comb_kl
    return q


__all__ = ["ElboTerms", "ScaledELBO", "estimate_elbo", "fused_terms", "guide_terms",
           "outer_objective", "pyro_trace_terms", "supports_fused_terms", "trace_terms"]

"""Complexity of a fitted variational posterior q(W, Gamma) (METHOD.md section 4).

- **Parametric complexity** C_param(theta) = min_h KL(q(W, Gamma | theta) || p(W, Gamma | h)).
  For the Gaussian weight part the minimum over a group g's precision is closed-form:

      A_g* = n_g / sum_{i in g} E_q[w_i^2] = n_g / sum_{i in g} (mu_i^2 + sigma_i^2),
      min_A KL(q(W) || N(0, A^{-1})) = -1/2 sum_g n_g ln A_g* - H(q(W)) + P/2 (1 + ln 2 pi)
                                     = -1/2 sum_g n_g ln A_g* - 1/2 sum_i ln sigma_i^2   (diagonal q).

  Groups follow the model's precision level (one A per (edge, primitive), per parameter or
  shared).  For a discrete q(s) with q(W | s) at the prior off s
  (:class:`~bnas_pyro.guides.StructuredGuide`) the KL is exact in expectation over q(s):
  KL(q || p(. | h)) = KL(q(s) || p(s | m)) + sum_g P_q(g in s) KL(q_g || p(W_g | A)) (the absent
  groups pay nothing), so every sum over parameters above is weighted by P_i = P_q(g(i) in s):
  A_k* = sum_{i in k} P_i / sum_{i in k} P_i E_{q_g}[w_i^2] and H = sum_g P_g H(q_g)
  (:func:`parametric_complexity`).  For the structure part, min_m KL(q(Gamma) || p(Gamma | m, c_temp)) is 0 when q is a
  Concrete distribution at the prior's temperature (take m = s_q); otherwise it is minimised
  numerically over m with fixed Monte Carlo draws.
  Claims (METHOD.md section 4): C_param -> 0 as c_prior -> infinity; non-increasing in c_prior.
- **Structural complexity** C_struct = entropy of q(Gamma), three readings
  (:func:`structural_complexity`): ``"discrete"`` (default), the entropy of the discrete structure
  argmax Gamma under q, the limit of q(Gamma) as c_temp -> 0 (a categorical on the N vertices),
  in [0, log N], 0 when q picks one structure; ``"mixing"``, E_q[H(gamma)], the mean entropy of
  the relaxed mixing weights, in [0, sum_e log K_e], -> 0 as c_temp -> 0; ``"differential"``,
  the Monte Carlo -E_q log q(Gamma) of the relaxed gamma on the simplex, unbounded below.
- **Relative variational density** rho(w) = q(w = 0) / q(w = mu) = exp(-mu^2 / (2 sigma^2)): rho near
  1 means the parameter can be pruned (the |mu / sigma| criterion).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pyro.distributions as dist
import torch
from pyro import poutine
from torch import Tensor
from torch.distributions import Independent, MultivariateNormal, Normal

from bnas_pyro.distributions import StructureScaledNormal
from bnas_pyro.guides import StructuredGuide
from bnas_pyro.models.structure_priors import concrete, structure_site
from bnas_pyro.models.weight_priors import WEIGHT_SITE

from .structure_posterior import probe_input

__all__ = [
    "ParametricComplexity", "WeightMoments", "informative_parameters", "optimal_precision",
    "parameter_kl", "parametric_complexity", "precision_groups", "prune_mask", "relative_density",
    "structural_complexity", "weight_moments",
]

_HALF_LOG_2PI_E = 0.5 * math.log(2 * math.pi * math.e)


# ---------------------------------------------------------------------------- q(W) in one place
@dataclass
class WeightMoments:
    """What the complexity measures of METHOD.md section 4 need from q(W): per-parameter mean,
    variance and second moment E_q[w^2] = mu^2 + sigma^2 (in the prior's own coordinates), and the
    entropy H(q(W | Gamma)) averaged over q(Gamma).  ``exact`` is False for Monte Carlo estimates.
    For a discrete q(s) with q(W | s) at the prior off s the moments are those of q_g (given that
    g is in s), ``presence`` holds P_q(g in s) per parameter and ``entropy`` is
    sum_g P_q(g in s) H(q_g), the part of E_q(s) H(q(W | s)) that differs from the prior's."""

    mean: Tensor
    variance: Tensor
    second_moment: Tensor
    entropy: Tensor
    exact: bool = True
    #: P_q(g(i) in s) per parameter for a discrete q(s) (``None``: every parameter is always read)
    presence: Tensor | None = None
    #: the entropy split over parameters, summing to ``entropy`` (``None``: not available)
    entropy_per_parameter: Tensor | None = None


def _guide_trace(model, guide):
    with torch.no_grad():
        return poutine.trace(guide).get_trace(probe_input(model))


def _weights_fn(model, guide):
    tr = _guide_trace(model, guide)
    if WEIGHT_SITE not in tr.nodes:
        raise ValueError(f"the guide has no {WEIGHT_SITE!r} site")
    return tr.nodes[WEIGHT_SITE]["fn"]


def _gaussian_parts(fn, prior_scaled: bool) -> tuple[Tensor, Tensor, Tensor] | None:
    """(mean, variance, entropy) of a Gaussian q(W | Gamma), or None for other families.

    With the structure-scaled prior N(0, gamma^2 / A) and the coupled guide N(gamma mu,
    gamma^2 s^2), gamma cancels in the KL: the moments are those of w / gamma, i.e. (mu, s^2).
    """
    base = fn.base_dist if isinstance(fn, Independent) else fn
    if isinstance(base, Normal) and not isinstance(base, dist.Delta):
        scale = base.scale.expand_as(base.loc)
        return base.loc, scale**2, (_HALF_LOG_2PI_E + scale.log()).sum()
    if isinstance(base, MultivariateNormal):
        tril = base.scale_tril
        var = tril.pow(2).sum(-1)
        k = base.loc.shape[-1]
        entropy = k * _HALF_LOG_2PI_E + tril.diagonal(dim1=-2, dim2=-1).log().sum()
        return base.loc, var, entropy
    if isinstance(base, StructureScaledNormal):
        if prior_scaled:
            return base.loc, base.scale**2, (_HALF_LOG_2PI_E + base.scale.log()).sum()
        return base.mean, base.variance, (_HALF_LOG_2PI_E + base.scale.log()
                                          + base.log_gamma).sum()
    return None


def weight_moments(model, guide, num_samples: int = 256) -> WeightMoments:
    """Mean, variance, E_q[w^2] and E_{q(Gamma)} H(q(W | Gamma)) of the guide's weights.

    Exact for a diagonal or full-covariance Gaussian q(W) independent of Gamma; for the
    structure-coupled guide (q(W | Gamma) depends on gamma) an average over ``num_samples``
    draws of q(Gamma); for a point mass (Delta / MAP) the entropy is -infinity.
    """
    if isinstance(guide, StructuredGuide):
        return _structured_moments(model, guide)
    prior_scaled = bool(getattr(model.weight_prior, "scaled", False))
    fn = _weights_fn(model, guide)
    base = fn.base_dist if isinstance(fn, Independent) else fn
    if isinstance(base, dist.Delta):
        v = base.v.detach()
        return WeightMoments(v, torch.zeros_like(v), v**2, v.new_tensor(-math.inf))
    parts = _gaussian_parts(fn, prior_scaled)
    depends_on_gamma = isinstance(base, StructureScaledNormal) and not prior_scaled
    if parts is not None and not depends_on_gamma:
        mean, var, entropy = (t.detach() for t in parts)
        return WeightMoments(mean, var, mean**2 + var, entropy)
    # Monte Carlo over q(Gamma) (and over q(W | Gamma) when its family is unknown)
    means, seconds, entropies = [], [], []
    for _ in range(num_samples):
        fn = _weights_fn(model, guide)
        parts = _gaussian_parts(fn, prior_scaled)
        if parts is not None:
            m, v, h = (t.detach() for t in parts)
            means.append(m)
            seconds.append(m**2 + v)
            entropies.append(h)
        else:
            w = fn.sample()
            means.append(w)
            seconds.append(w**2)
            entropies.append(-fn.log_prob(w).sum())
    mean = torch.stack(means).mean(0)
    second = torch.stack(seconds).mean(0)
    return WeightMoments(mean, (second - mean**2).clamp_min(0), second,
                         torch.stack(entropies).mean(), exact=False)


@torch.no_grad()
def _structured_moments(model, guide: StructuredGuide) -> WeightMoments:
    """Exact moments of every q_g of a StructuredGuide and P_q(g in s) per parameter.

    Var(w_i) is the squared row norm of q_g's Cholesky factor; H(q_g) = sum_{i in g} (1/2 ln 2 pi e
    + ln L_ii), split over the parameters by the factor's diagonal (the guide's scale).  With one
    q(W | s) per structure the moments are the q(s)-weighted mixture over the structures that read
    each parameter: P_i = sum_s q(s) [g(i) in s], E[w_i^2] = sum_s q(s) [g(i) in s] E_s[w_i^2] / P_i
    (and the mean alike), and the entropy sum_s q(s) sum_{g in s} H(q_{g,s})."""
    if getattr(guide, "per_structure", False):
        return _per_structure_moments(model, guide)
    mean = guide.loc.detach()
    scale = guide.scale.detach()
    if guide.weights_family == "full_rank" and guide._group_bounds:
        var = torch.cat([(guide._tril(g, scale) ** 2).sum(-1)
                         for g in range(len(guide._group_bounds))])
    else:
        var = scale**2
    presence = guide.group_probabilities().detach()[model.supernet.group_index]
    per_param = _HALF_LOG_2PI_E + scale.log()
    # P_i H_i, with P_i = 0 contributing nothing (its q_g may be degenerate: 0 * -inf)
    weighted = torch.where(presence > 0, presence * per_param, torch.zeros_like(per_param))
    return WeightMoments(mean, var, mean**2 + var, weighted.sum(), exact=True, presence=presence,
                         entropy_per_parameter=weighted)


@torch.no_grad()
def _per_structure_moments(model, guide: StructuredGuide) -> WeightMoments:
    """:func:`_structured_moments` for a guide with one q(W | s) per structure (its docstring)."""
    q = guide.structure_probabilities().detach()
    presence = mean = second = weighted = None
    for choice, q_s in zip(guide.structure.choices, q):
        m = _structured_moments(model, guide.restricted(choice))   # presence 0/1 on s
        w = q_s * m.presence
        parts = (w, w * m.mean, w * m.second_moment, q_s * m.entropy_per_parameter)
        if presence is None:
            presence, mean, second, weighted = parts
        else:
            presence, mean, second, weighted = (a + b for a, b in
                                                zip((presence, mean, second, weighted), parts))
    read = presence > 0
    safe = torch.where(read, presence, torch.ones_like(presence))
    mean = torch.where(read, mean / safe, torch.zeros_like(mean))
    second = torch.where(read, second / safe, torch.zeros_like(second))
    return WeightMoments(mean, (second - mean**2).clamp_min(0), second, weighted.sum(), exact=True,
                         presence=presence, entropy_per_parameter=weighted)


def precision_groups(model) -> Tensor:
    """The group of every scalar weight under the model's precision level (one A per group)."""
    level = model.hyper.precision_level
    index = model.layout.group_index.to(model.hyper.log_precision.device)
    if level == "group":
        return index
    if level == "parameter":
        return torch.arange(index.numel(), device=index.device)
    return torch.zeros_like(index)


def _group_counts_and_sums(model, moments: WeightMoments) -> tuple[Tensor, Tensor, Tensor]:
    groups = precision_groups(model)
    second = moments.second_moment
    size = model.hyper.log_precision.numel()
    weight = (torch.ones_like(second) if moments.presence is None
              else moments.presence.to(second))
    # P_i E[w_i^2], 0 where the parameter is never read (P_i = 0)
    weighted = torch.where(weight > 0, weight * second, torch.zeros_like(second))
    counts = torch.zeros(size, dtype=second.dtype, device=second.device).index_add_(
        0, groups, weight)
    sums = torch.zeros_like(counts).index_add_(0, groups, weighted)
    return groups, counts, sums


def optimal_precision(model, guide, num_samples: int = 256) -> Tensor:
    """A_g* = n_g / sum_{i in g} E_q[w_i^2] for every precision group (METHOD.md section 4); for a
    discrete q(s) both sums weighted by P_q(g(i) in s) (module docstring).

    The shape is that of ``model.hyper.log_precision``; a group without parameters (or never in
    s) gets ``nan``.
    """
    _, counts, sums = _group_counts_and_sums(model, weight_moments(model, guide, num_samples))
    return counts / sums


@dataclass
class ParametricComplexity:
    """C_param = weights + structure, with the minimising precisions A* (METHOD.md section 4)."""

    total: float
    weights: float
    structure: float
    optimal_precision: Tensor
    exact: bool = True
    per_group: Tensor = field(default_factory=lambda: torch.zeros(0))

    def __float__(self) -> float:
        return self.total


def parametric_complexity(model, guide, *, include_structure: bool = True, num_samples: int = 256,
                          structure_steps: int = 300) -> ParametricComplexity:
    """C_param(theta) = min_h KL(q(W, Gamma | theta) || p(W, Gamma | h)).

    Weights: closed form over the precisions, per group g (n_g parameters)

        KL_g(A_g*) = -1/2 n_g ln A_g* - H_g(q) + n_g/2 (1 + ln 2 pi),     A_g* = n_g / sum E[w_i^2],

    which for a diagonal Gaussian q is -1/2 (n_g ln A_g* + sum_{i in g} ln sigma_i^2).  Structure:
    min over the prior logits m of KL(q(Gamma) || Concrete(m, c_temp)), zero when q is Concrete
    at the prior's temperature, else minimised over m by Adam on ``num_samples`` fixed draws of q
    (``structure_steps`` steps).  A point-mass q(W) has C_param = +infinity.

    A discrete q(s) with q(W | s) at the prior off s (:class:`~bnas_pyro.guides.StructuredGuide`):
    the exact expectation over q(s) (module docstring, METHOD.md section 4),

        C_param = min_m KL(q(s) || p(s | m)) + min_A sum_g P_q(g in s) KL(q_g || N(0, A^-1)),

    n_g -> sum_{i in g} P_i and sum E[w_i^2] -> sum P_i E[w_i^2] in A*, H -> sum_g P_g H(q_g); the
    structure part is sum_e H(q_e) - H(q(s)) for a joint q(s) (the minimising m are its marginals),
    0 for a factorised one.  (One structure drawn from q(s), as for other guides, gave a random
    value, and NaN where q(s) has exact zeros: 0 log 0 in float32.)
    """
    moments = weight_moments(model, guide, num_samples)
    groups, counts, sums = _group_counts_and_sums(model, moments)
    A_star = counts / sums
    present = counts > 0
    log_A = torch.where(present, A_star.log(), torch.zeros_like(A_star))
    cross_entropy_per_group = 0.5 * counts * (1 + math.log(2 * math.pi) - log_A)
    weights = float(cross_entropy_per_group.sum() - moments.entropy)
    # the per-group split is exact when H(q(W)) is the sum of the marginal entropies (diagonal q)
    per_group = torch.zeros(0)
    if moments.entropy_per_parameter is not None:
        ent_g = torch.zeros_like(A_star).index_add_(0, groups, moments.entropy_per_parameter)
        per_group = (cross_entropy_per_group - ent_g).detach().cpu()
    elif moments.exact and torch.isfinite(moments.entropy):
        var = moments.variance.clamp_min(torch.finfo(moments.variance.dtype).tiny)
        per_param_entropy = _HALF_LOG_2PI_E + 0.5 * var.log()
        if torch.isclose(per_param_entropy.sum(), moments.entropy, rtol=1e-5, atol=1e-4):
            ent_g = torch.zeros_like(A_star).index_add_(0, groups, per_param_entropy)
            per_group = (cross_entropy_per_group - ent_g).detach().cpu()
    structure = _structure_min_kl(model, guide, num_samples, structure_steps) if include_structure else 0.0
    return ParametricComplexity(weights + structure, weights, structure, A_star.detach().cpu(),
                                moments.exact, per_group)


def _structure_min_kl(model, guide, num_samples: int, steps: int) -> float:
    """min_m KL(q(Gamma) || Concrete(m, c_temp)), summed over edges."""
    structure = getattr(guide, "structure", None)
    edges = [(e, edge) for e, edge in enumerate(model.space.edges) if len(edge) > 1]
    if not edges:
        return 0.0
    if isinstance(guide, StructuredGuide):       # a discrete q(s)
        return float(_discrete_min_prior_kl(guide))
    t_prior = float(model.temperature)
    if structure is not None and hasattr(structure, "temperature"):
        t_q = structure.temperature()
        if abs(float(t_q) - t_prior) <= 1e-12 * max(1.0, t_prior):
            return 0.0
    total = 0.0
    traces = [_guide_trace(model, guide) for _ in range(num_samples)]
    for e, edge in edges:
        site = structure_site(edge.name)
        draws = torch.stack([tr.nodes[site]["value"] for tr in traces]).detach()
        log_q = torch.stack([tr.nodes[site]["fn"].log_prob(tr.nodes[site]["value"])
                             for tr in traces]).detach()
        m = model.hyper.logits(e).detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([m], lr=0.05)
        best = math.inf
        for _ in range(max(int(steps), 1)):
            opt.zero_grad()
            kl = (log_q - concrete(m, t_prior).log_prob(draws)).mean()
            best = min(best, float(kl.detach()))
            kl.backward()
            opt.step()
        total += best
    return total


@torch.no_grad()
def _discrete_min_prior_kl(guide: StructuredGuide) -> Tensor:
    """min over m of KL(q(s) || prod_e softmax(m^e)) = sum_e H(q_e) - H(q(s)): the marginals q_e
    are the minimiser; 0 for a factorised q(s).  Entropies by ``torch.special.entr`` (0 log 0 = 0
    in every dtype)."""
    if not guide.joint:
        return guide.loc.new_zeros(())
    joint_h = torch.special.entr(guide.structure_probabilities().detach()).sum()
    marginal_h = sum(torch.special.entr(m.detach()).sum() for m in guide.structure.probabilities())
    return (marginal_h - joint_h).clamp_min(0.0)


# ---------------------------------------------------------------------------- structure
def structural_complexity(model, guide, kind: str = "discrete", num_samples: int = 4000) -> float:
    """C_struct: the entropy of q(Gamma) (METHOD.md section 4), in nats.

    ``kind="discrete"``: H of the distribution of the discrete structure argmax Gamma under q,
    which is what q(Gamma) becomes as c_temp -> 0 (a categorical on the N = prod_e K_e
    vertices).  For a Concrete q, P(argmax gamma^e = l) = softmax(s_q^e)_l and the edges are
    independent, so H = sum_e H(softmax(s_q^e)) exactly; other guides get the plug-in estimate
    from ``num_samples`` draws; a joint discrete q(s) (StructuredGuide) gives H(q(s)) exactly
    (a factorised one sum_e H(q_e)).  Range [0, log N]; 0 means q has chosen one structure.

    ``kind="mixing"``: E_q[H(gamma)] = -E_q sum_e sum_l gamma^e_l log gamma^e_l, the Monte Carlo
    mean entropy of the relaxed mixing weights themselves: log K_e per edge when every sample
    mixes all primitives equally, 0 when every sample is a vertex (one primitive per edge).  It
    falls to 0 as c_temp -> 0 whatever s_q, and also as q commits (large logit gaps).

    ``kind="differential"``: -E_q log q(Gamma), the Monte Carlo differential entropy of the relaxed
    structure on the simplex (log q_simplex(gamma) = log q_ExpRelaxed(log gamma) - sum_l log
    gamma_l).  It is unbounded below and not monotone in the temperature (-> -infinity as
    c_temp -> 0 *and* as c_temp -> infinity): it does not fall "towards 0" but past it.

    Measured (``tests/test_complexity.py``): after searches at c_temp = 10, 1, 0.2, 0.05 the
    mixing kind falls monotonically to ~0; the discrete kind is small wherever q has chosen a
    structure, which a long enough search does at every temperature, even c_temp = 10.
    """
    edges = [(e, edge) for e, edge in enumerate(model.space.edges) if len(edge) > 1]
    if not edges:
        return 0.0
    if kind == "discrete":
        structure = getattr(guide, "structure", None)
        if isinstance(guide, StructuredGuide) and guide.joint:    # H of the joint q(s), exact
            return float(torch.special.entr(guide.structure_probabilities().detach()).sum())
        if structure is not None and hasattr(structure, "probabilities"):
            with torch.no_grad():
                probs = structure.probabilities()
                return float(sum(torch.special.entr(p).sum()
                                 for e, p in enumerate(probs) if len(model.space.edges[e]) > 1))
        counts: dict[tuple[int, ...], int] = {}
        for _ in range(num_samples):
            tr = _guide_trace(model, guide)
            key = tuple(int(tr.nodes[structure_site(edge.name)]["value"].argmax()) for _, edge in edges)
            counts[key] = counts.get(key, 0) + 1
        freq = torch.tensor(list(counts.values()), dtype=torch.float64) / num_samples
        return float(-(freq * freq.log()).sum())
    if kind not in ("differential", "mixing"):
        raise ValueError(f"kind must be 'discrete', 'differential' or 'mixing', got {kind!r}")
    per_edge = _structure_draws(model, guide, edges, num_samples)
    total = torch.zeros(num_samples, dtype=torch.float64)
    for log_gamma, log_q in per_edge:
        if kind == "differential":      # log q_simplex(gamma) = log q_ExpRelaxed(log gamma) - sum log gamma
            total += (log_q - log_gamma.sum(-1)).double().cpu()
        else:                           # H(gamma) = -sum_l gamma_l log gamma_l
            g = log_gamma.exp()
            total += (-torch.where(g > 0, g * log_gamma, torch.zeros_like(g)).sum(-1)).double().cpu()
    return float(-total.mean()) if kind == "differential" else float(total.mean())


def _structure_draws(model, guide, edges, num_samples: int) -> list[tuple[Tensor, Tensor]]:
    """(log gamma, log q(log gamma)) draws per multi-primitive edge: batched for a Concrete q
    (``guide.structure.distribution``), by tracing the guide otherwise."""
    structure = getattr(guide, "structure", None)
    with torch.no_grad():
        if structure is not None and hasattr(structure, "distribution"):
            out = []
            for e, _ in edges:
                d = structure.distribution(e)
                v = d.sample((num_samples,))
                out.append((v, d.log_prob(v)))
            return out
        values: list[list[Tensor]] = [[] for _ in edges]
        logps: list[list[Tensor]] = [[] for _ in edges]
        for _ in range(num_samples):
            tr = _guide_trace(model, guide)
            for i, (_, edge) in enumerate(edges):
                site = tr.nodes[structure_site(edge.name)]
                values[i].append(site["value"])
                logps[i].append(site["fn"].log_prob(site["value"]))
        return [(torch.stack(v), torch.stack(lp)) for v, lp in zip(values, logps)]


# ---------------------------------------------------------------------------- per parameter
def relative_density(model, guide, num_samples: int = 256) -> Tensor:
    """rho(w_i) = q(w_i = 0) / q(w_i = mu_i) = exp(-mu_i^2 / (2 sigma_i^2)) per parameter.

    rho near 1: zero is about as plausible as the mean under q, so w_i can be pruned; rho = 0 for
    a point mass away from 0.  Shape ``(num_parameters,)``.
    """
    m = weight_moments(model, guide, num_samples)
    var = m.variance
    rho = torch.exp(-m.mean**2 / (2 * var.clamp_min(torch.finfo(var.dtype).tiny)))
    return torch.where(var > 0, rho, (m.mean == 0).to(rho.dtype))


def prune_mask(model, guide, threshold: float = 0.5, num_samples: int = 256) -> Tensor:
    """Boolean mask of the parameters to *keep*: rho(w) < ``threshold`` (METHOD.md section 4).

    ``threshold`` in (0, 1]: parameters whose relative density reaches it are pruned (set to 0).
    rho >= threshold is |mu / sigma| <= sqrt(-2 ln threshold).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    return relative_density(model, guide, num_samples) < threshold


def parameter_kl(model, guide, num_samples: int = 256) -> Tensor:
    """KL(q(w_i) || p(w_i | A)) per scalar weight at the model's current precision A:
    1/2 (A (mu^2 + sigma^2) - 1 - ln A - ln sigma^2)   (METHOD.md section 3)."""
    m = weight_moments(model, guide, num_samples)
    A = model.hyper.precision_per_parameter().detach().to(m.mean)
    var = m.variance
    log_var = torch.where(var > 0, var.clamp_min(torch.finfo(var.dtype).tiny).log(),
                          var.new_tensor(-math.inf))
    return 0.5 * (A * m.second_moment - 1 - A.log() - log_var)


def informative_parameters(model, guide, threshold: float = 1.0, num_samples: int = 256) -> Tensor:
    """Mask of the *informative* parameters: those whose KL(q(w_i) || p(w_i)) exceeds ``threshold``
    nats; their count is the AIC/BIC-like complexity of METHOD.md section 4."""
    return parameter_kl(model, guide, num_samples) > threshold

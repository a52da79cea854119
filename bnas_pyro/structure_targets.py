"""The set P of structure distributions in the c_comb term of Q (METHOD.md section 4).

    Q = ... - c_comb sum_{p' in P} KL(p(Gamma | h) || p')

Every element of P is a *structure target*: an object with ``check(space)`` and
``kl_from_prior(draws)``, the KL from the structure prior p(Gamma | h) to the target, estimated
from :class:`PriorDraws` (reparameterised draws of the prior, so the estimate is differentiable in
the prior logits m).  Two targets are built in:

- :class:`StructureDistribution`: a product over edges of Concrete distributions, e.g. the
  thesis's GS(0.1, [0.99, 0.05, 0.05]);
- :class:`StructureMixture`: the uniform mixture of several of them (what the ``enumerate`` mode
  pushes away from).

:func:`comb_kl` draws the prior once and sums every target's KL: one code path for every kind of
target.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from bnas_pyro.distributions import ExpRelaxedCategorical


@dataclass
class PriorDraws:
    """``num_samples`` reparameterised draws of the structure prior p(Gamma | h), per edge.

    ``draws[edge]`` are the draws of log gamma^e (``(num_samples, K_e)``) and ``log_prob[edge]``
    their log-density under the prior (``(num_samples,)``), in the order of the model's structure
    sites.  ``like`` is a scalar tensor of the prior's dtype and device (for empty sums).
    """

    draws: dict[str, Tensor]
    log_prob: dict[str, Tensor]
    like: Tensor

    @classmethod
    def sample(cls, model, num_samples: int) -> "PriorDraws":
        draws: dict[str, Tensor] = {}
        log_prob: dict[str, Tensor] = {}
        for site, prior in model.structure_prior.distributions(model).items():
            edge = site[len("gamma["):-1]
            value = prior.rsample((num_samples,))
            draws[edge] = value
            log_prob[edge] = prior.log_prob(value)
        return cls(draws, log_prob, model.hyper.structure_logits.new_zeros(()))


@runtime_checkable
class StructureTarget(Protocol):
    """An element p' of P: checks itself against a space and estimates KL(p(Gamma | h) || p')."""

    def check(self, space) -> None: ...

    def kl_from_prior(self, prior: PriorDraws) -> Tensor: ...


class StructureDistribution:
    """prod_e Concrete(s'_e, t') over the edges named in ``probabilities``.

    KL(p(Gamma | h) || p') = sum_e E_p[log p_e(gamma^e | h) - log Concrete(gamma^e; s'_e, t')] over
    the named edges (edges not named contribute nothing).

    Args:
        probabilities: edge name -> the (unnormalised) s' of that edge.
        temperature: t' (the thesis uses 0.1: close to one discrete structure).
    """

    def __init__(self, probabilities: Mapping[str, Sequence[float] | Tensor], temperature: float = 0.1):
        if temperature <= 0:
            raise ValueError(f"temperature of a structure distribution must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.logits = {}
        for edge, p in probabilities.items():
            p = torch.as_tensor(p, dtype=torch.float64)
            if (p <= 0).any():
                raise ValueError(f"structure distribution on edge {edge}: s' must be > 0, got {p.tolist()}")
            self.logits[edge] = p.log()

    @classmethod
    def at_structure(cls, space, structure: Mapping[str, str], mass: float = 0.99,
                     rest: float = 0.05, temperature: float = 0.1) -> "StructureDistribution":
        """A distribution near one discrete structure: s'_l = mass for the chosen label, rest else."""
        probs = {}
        for e in space.edges:
            if len(e) > 1 and e.name in structure:
                probs[e.name] = [mass if lab == structure[e.name] else rest for lab in e.labels]
        return cls(probs, temperature)

    def check(self, space) -> None:
        """Every named edge exists in ``space``, has a choice, and gets one s' per primitive."""
        edges = {e.name: e for e in space.edges}
        for name, logits in self.logits.items():
            if name not in edges:
                raise ValueError(f"structure distribution names edge {name!r}, which the search "
                                 f"space does not have; edges: {sorted(edges)}")
            if len(edges[name]) == 1:
                raise ValueError(f"structure distribution on edge {name}: the edge has a single "
                                 f"primitive, so there is no structure to push towards or away from")
            if logits.shape[-1] != len(edges[name]):
                raise ValueError(f"structure distribution on edge {name}: {logits.shape[-1]} values "
                                 f"for {len(edges[name])} primitives {edges[name].labels}")

    def distribution(self, edge: str, like: Tensor) -> ExpRelaxedCategorical:
        logits = self.logits[edge].to(like)
        return ExpRelaxedCategorical(torch.tensor(self.temperature, dtype=like.dtype,
                                                  device=like.device), logits=logits)

    def log_prob(self, prior: PriorDraws) -> Tensor | float:
        """log p'(Gamma) of the prior's draws, summed over the named edges (0.0 if none)."""
        total: Tensor | float = 0.0
        for edge, value in prior.draws.items():
            if edge in self.logits:
                total = total + self.distribution(edge, value).log_prob(value)
        return total

    def kl_from_prior(self, prior: PriorDraws) -> Tensor:
        total = prior.like
        for edge, value in prior.draws.items():
            if edge in self.logits:
                log_t = self.distribution(edge, value).log_prob(value)
                total = total + (prior.log_prob[edge] - log_t).mean()
        return total

    def __repr__(self) -> str:
        parts = ", ".join(f"{e}: {l.exp().tolist()}" for e, l in self.logits.items())
        return f"StructureDistribution(t={self.temperature}, {{{parts}}})"


class StructureMixture:
    """The uniform mixture (1/n) sum_j p'_j of structure distributions (one element of P).

    KL(p(Gamma | h) || mixture) = E_p[ log p(Gamma | h) - logsumexp_j log p'_j(Gamma) + log n ],
    by reparameterised Monte Carlo from the prior (differentiable in its logits m).  Unlike the
    sum of the KLs to each p'_j, which splits into independent per-edge terms (an edge on which
    the found structures are balanced feels no net push), the mixture's log-density is large only
    near one of the found structures *as a whole*: maximising the KL moves the prior to a structure
    that differs from every found one on at least one edge.
    """

    def __init__(self, components: Sequence[StructureDistribution]):
        if not components:
            raise ValueError("a structure mixture needs at least one component")
        self.components = list(components)

    def check(self, space) -> None:
        """Every component names edges of ``space`` with one s' per primitive."""
        for comp in self.components:
            comp.check(space)

    def kl_from_prior(self, prior: PriorDraws) -> Tensor:
        if not prior.draws:
            return prior.like
        log_p: Any = 0.0
        for value in prior.log_prob.values():
            log_p = log_p + value
        log_t = [comp.log_prob(prior) for comp in self.components]
        stacked = torch.stack([torch.as_tensor(v, dtype=log_p.dtype, device=log_p.device).expand_as(log_p)
                               for v in log_t])
        log_mix = stacked.logsumexp(0) - math.log(len(self.components))
        return (log_p - log_mix).mean()

    def __repr__(self) -> str:
        return f"StructureMixture({len(self.components)} components)"


def _takes_one_argument(method: Any) -> bool:
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return True   # cannot tell (e.g. a builtin): let the first call say
    required = [p for p in params if p.default is p.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(required) <= 1 <= len(positional) or any(p.kind == p.VAR_POSITIONAL for p in params)


def check_targets(targets: Sequence[Any], space) -> list[StructureTarget]:
    """The targets as a list, each checked against ``space``; anything that is not a structure
    target (``check(space)`` and ``kl_from_prior(prior_draws)``, one argument: the
    :class:`PriorDraws`) is refused by its position and type."""
    out = []
    for i, target in enumerate(targets):
        if not isinstance(target, StructureTarget) or not _takes_one_argument(target.kl_from_prior):
            raise TypeError(f"comb_targets[{i}] is a {type(target).__name__}, not a structure "
                            "target (StructureDistribution, StructureMixture or any object with "
                            "check(space) and kl_from_prior(prior_draws), prior_draws a "
                            "bnas_pyro.structure_targets.PriorDraws)")
        target.check(space)
        out.append(target)
    return out


def comb_kl(model, targets: Sequence[StructureTarget], num_samples: int = 16) -> Tensor:
    """sum_{p' in P} KL(p(Gamma | h) || p'), from ``num_samples`` reparameterised draws of the
    prior shared by every target; differentiable in the structure logits m of ``model.hyper``."""
    if not targets:
        return model.hyper.structure_logits.new_zeros(())
    prior = PriorDraws.sample(model, num_samples)
    total = prior.like
    for target in targets:
        total = total + target.kl_from_prior(prior)
    return total


__all__ = ["PriorDraws", "StructureDistribution", "StructureMixture", "StructureTarget",
           "check_targets", "comb_kl"]

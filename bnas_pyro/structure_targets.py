"""Distributions P on the structure for the c_comb term of Q (METHOD.md section 4).

A :class:`StructureDistribution` is a product over edges of Concrete distributions, e.g. the
thesis's GS(0.1, [0.99, 0.05, 0.05]).  ``comb_kl`` estimates sum_{p' in P} KL(p(Gamma|h) || p')
by reparameterised Monte Carlo from the structure prior p(Gamma|h).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from .distributions import ExpRelaxedCategorical


class StructureDistribution:
    """prod_e Concrete(s'_e, t') over the edges named in ``probabilities``.

    Args:
        probabilities: edge name -> the (unnormalised) s' of that edge; edges not named are
            left out of the KL (they contribute nothing).
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

    def __repr__(self) -> str:
        parts = ", ".join(f"{e}: {l.exp().tolist()}" for e, l in self.logits.items())
        return f"StructureDistribution(t={self.temperature}, {{{parts}}})"


def comb_kl(model, targets: Sequence[StructureDistribution], num_samples: int = 16) -> Tensor:
    """sum_{p' in P} KL(p(Gamma|h) || p'), Monte Carlo with ``num_samples`` reparameterised draws.

    Differentiable in the structure logits m of ``model.hyper``.
    """
    total = model.hyper.structure_logits.new_zeros(())
    if not targets:
        return total
    priors = model.structure_prior.distributions(model)
    for site, prior in priors.items():
        edge = site[len("gamma["):-1]
        draws = prior.rsample((num_samples,))
        log_p = prior.log_prob(draws)
        for target in targets:
            if edge in target.logits:
                total = total + (log_p - target.distribution(edge, draws).log_prob(draws)).mean()
    return total

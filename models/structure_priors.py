"""Structure prior: gamma^{j,k} ~ Concrete(logits m^{j,k}, temperature c_temp) (METHOD.md section 2).

Samples live in log space: the Pyro site ``gamma[EDGE]`` holds ``log gamma`` distributed as
``ExpRelaxedCategorical``.  Its density differs from the simplex density by the Jacobian of exp,

    log p_simplex(gamma) = log p_ExpRelaxed(log gamma) - sum_l log gamma_l,

and every KL between two such distributions is the same in either space.  Working in log space
keeps log-densities finite at low temperature, where ``gamma`` itself underflows (METHOD.md
section 3: ``RelaxedOneHotCategorical.log_prob`` is non-finite for up to 100% of float32 samples
at t = 0.05).
"""

from __future__ import annotations

import math

import pyro
import torch
from torch import Tensor

from bnas_pyro.distributions import ExpRelaxedCategorical

from .protocol import SupernetModel

#: marks structure sites for the objectives (KL(q(Gamma) || p(Gamma|h)) is reported apart)
STRUCTURE_ROLE = {"bnas_role": "structure"}


def structure_site(edge_name: str) -> str:
    """The Pyro site name of edge ``edge_name``'s structure (its log gamma)."""
    return f"gamma[{edge_name}]"


def check_temperature(temperature: "float | Tensor") -> None:
    value = float(temperature)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"temperature c_temp must be a finite number > 0, got {value}")


def concrete(logits: Tensor, temperature: "float | Tensor") -> ExpRelaxedCategorical:
    """The Concrete distribution in log space (``log gamma``)."""
    t = torch.as_tensor(temperature, dtype=logits.dtype, device=logits.device)
    return ExpRelaxedCategorical(t, logits=logits)


def concrete_log_density(gamma_log: Tensor, logits: Tensor, temperature: "float | Tensor") -> Tensor:
    """log p(gamma | s, t) on the simplex, METHOD.md section 2, evaluated from ``log gamma``:

        p(gamma | s, t) = (K-1)! t^(K-1) prod_l [s_l gamma_l^(-t-1)] (sum_l s_l gamma_l^(-t))^(-K)
    """
    t = torch.as_tensor(temperature, dtype=gamma_log.dtype, device=gamma_log.device)
    K = gamma_log.shape[-1]
    log_s = logits - logits.logsumexp(-1, keepdim=True)
    return (math.lgamma(K) + (K - 1) * t.log()
            + (log_s - (t + 1) * gamma_log).sum(-1)
            - K * (log_s - t * gamma_log).logsumexp(-1))


class ConcreteStructurePrior:
    """p(Gamma | m, c_temp) = prod_{edges} Concrete(gamma^{e}; m^{e}, c_temp).

    Called inside the model; returns one ``log gamma`` per edge (``None`` for an edge with one
    primitive, where gamma = 1 and nothing is chosen).  The temperature is the model's
    ``temperature`` attribute (c_temp), so a schedule can anneal it.
    """

    def __call__(self, model: SupernetModel) -> list[Tensor | None]:
        t = model.temperature
        log_gammas: list[Tensor | None] = []
        for e, edge in enumerate(model.space.edges):
            if len(edge) == 1:
                log_gammas.append(None)
                continue
            log_gammas.append(pyro.sample(structure_site(edge.name),
                                          concrete(model.hyper.logits(e), t),
                                          infer=dict(STRUCTURE_ROLE)))
        return log_gammas

    def distributions(self, model: SupernetModel) -> dict[str, ExpRelaxedCategorical]:
        """The per-edge prior distributions (log space), keyed by site name."""
        return {structure_site(edge.name): concrete(model.hyper.logits(e), model.temperature)
                for e, edge in enumerate(model.space.edges) if len(edge) > 1}

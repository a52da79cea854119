"""The posterior over structures that q(Gamma) defines (METHOD.md sections 2-3).

For a Concrete q, P_q(argmax gamma^e = l) = softmax(s_q^e)_l (METHOD.md section 2), so:

    q(argmax gamma^e = l)                    per edge (:func:`edge_probabilities`);
    q(structure) = prod_e q(argmax gamma^e = l_e)     (edges are independent under q);
    the most probable structure: the argmax per edge, its probability prod_e max_l q(...);
    the k most probable structures: the k largest products (:func:`top_products`, exact);
    E_q[gamma^e], the mean mixing weights (:func:`mean_gamma`);
    E_q[W] at gamma = 1, the posterior-mean weights (:func:`posterior_mean_weights`).

For guides without a Concrete structure part (e.g. Pyro's ``AutoNormal``) the per-edge
probabilities and means are Monte Carlo estimates from the guide's own draws.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any

import torch
from pyro import poutine
from torch import Tensor

from bnas_pyro.models.structure_priors import structure_site
from bnas_pyro.models.weight_priors import WEIGHT_SITE


def probe_input(model) -> Tensor:
    """One zero input in the dtype and on the device of the model's hyperparameters."""
    like = model.hyper.log_precision
    return torch.zeros((1,) + model.space.input_shape, dtype=like.dtype, device=like.device)


def edge_probabilities(model, guide, num_samples: int = 2000) -> dict[str, list[float]]:
    """q(argmax gamma^e = l) for every edge: exact for a Concrete q, else Monte Carlo."""
    space = model.space
    structure = getattr(guide, "structure", None)
    if structure is not None and hasattr(structure, "probabilities"):
        with torch.no_grad():
            return {e.name: p.tolist() for e, p in zip(space.edges, structure.probabilities())}
    counts = {e.name: torch.zeros(len(e)) for e in space.edges}
    x = probe_input(model)
    with torch.no_grad():
        for _ in range(num_samples):
            tr = poutine.trace(guide).get_trace(x)
            for e in space.edges:
                if len(e) == 1:
                    counts[e.name][0] += 1
                else:
                    counts[e.name][int(tr.nodes[structure_site(e.name)]["value"].argmax())] += 1
    return {k: (v / num_samples).tolist() for k, v in counts.items()}


@dataclass(frozen=True)
class RankedStructure:
    """A discrete structure (edge name -> primitive label) and its probability under q,
    prod_e q(argmax gamma^e = l_e) (METHOD.md sections 2-3)."""

    structure: dict[str, str]
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {"structure": dict(self.structure), "probability": self.probability}


def top_products(probabilities: list[list[float]], k: int) -> list[tuple[float, tuple[int, ...]]]:
    """The k largest products prod_e p_e[l_e] over index tuples, best first (exact, best-first search).

    Each edge's probabilities are sorted once; the search starts at the tuple of per-edge maxima
    and expands a tuple by moving one edge to its next-best entry, so it visits O(k * E) tuples
    instead of the prod_e K_e structures.
    """
    if k <= 0:
        return []
    orders = [sorted(range(len(p)), key=lambda i, p=p: -p[i]) for p in probabilities]

    def log_value(pos: tuple[int, ...]) -> float:
        total = 0.0
        for p, order, j in zip(probabilities, orders, pos):
            v = p[order[j]]
            total += math.log(v) if v > 0 else -math.inf
        return total

    start = (0,) * len(probabilities)
    heap = [(-log_value(start), start)]
    seen = {start}
    out = []
    while heap and len(out) < k:
        neg, pos = heapq.heappop(heap)
        out.append((math.exp(-neg), tuple(order[j] for order, j in zip(orders, pos))))
        for e in range(len(pos)):
            if pos[e] + 1 < len(orders[e]):
                nxt = pos[:e] + (pos[e] + 1,) + pos[e + 1:]
                if nxt not in seen:
                    seen.add(nxt)
                    heapq.heappush(heap, (-log_value(nxt), nxt))
    return out


def posterior_mean_weights(model, guide, num_samples: int = 1000) -> Tensor:
    """E_q[W] at gamma = 1: ``guide.weight_mean()`` when the guide has it, else a Monte Carlo
    mean of the guide's ``weights`` site (``num_samples`` draws)."""
    fn = getattr(guide, "weight_mean", None)
    if callable(fn):
        return fn().detach()
    x = probe_input(model)
    with torch.no_grad():
        draws = [poutine.trace(guide).get_trace(x).nodes[WEIGHT_SITE]["value"]
                 for _ in range(num_samples)]
    return torch.stack(draws).mean(0)


def mean_gamma(model, guide, num_samples: int = 4000) -> dict[str, list[float]]:
    """E_q[gamma^e] for every edge (Monte Carlo over q(Gamma); 1 for single-primitive edges).

    The "mean weight" of each primitive under q, as in the thesis's figures: unlike
    q(argmax gamma = l) it also reflects how close to a vertex the relaxed gamma is.
    """
    space = model.space
    x = probe_input(model)
    sums = {e.name: torch.zeros(len(e), dtype=torch.float64) for e in space.edges}
    structure = getattr(guide, "structure", None)
    with torch.no_grad():
        if structure is not None and hasattr(structure, "distribution"):
            for e, edge in enumerate(space.edges):
                if len(edge) == 1:
                    sums[edge.name] += num_samples
                    continue
                draws = structure.distribution(e).sample((num_samples,))
                sums[edge.name] += draws.exp().sum(0).double().cpu()
        else:
            for _ in range(num_samples):
                tr = poutine.trace(guide).get_trace(x)
                for edge in space.edges:
                    if len(edge) == 1:
                        sums[edge.name] += 1
                    else:
                        v = tr.nodes[structure_site(edge.name)]["value"]
                        sums[edge.name] += v.exp().double().cpu()
    return {k: (v / num_samples).tolist() for k, v in sums.items()}


__all__ = ["RankedStructure", "edge_probabilities", "mean_gamma", "posterior_mean_weights",
           "probe_input", "top_products"]

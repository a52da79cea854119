"""What a search returns: the posterior over structures, the derived architecture, the history.

P_q(argmax gamma^e = l) = softmax(s_q^e)_l for a Concrete q (METHOD.md section 2), so the most
probable discrete structure is the argmax per edge and its probability under q is the product of
the per-edge maxima (edges are independent under q); the k most probable structures are the k
largest products prod_e q(argmax gamma^e = l_e).  For guides without a Concrete structure part
(e.g. Pyro's ``AutoNormal``) the per-edge probabilities are Monte Carlo frequencies of the argmax.

:meth:`SearchResult.select` picks the discrete structure (argmax per edge, or the top-k incoming
edges per node as in DARTS), :meth:`SearchResult.derive` builds it as a plain ``nn.Module`` holding
the posterior means E_q[W] (:mod:`bnas_pyro.export`), and :meth:`SearchResult.to_json` writes the
result, with that network, as JSON that :func:`bnas_pyro.export.load_network` rebuilds.
"""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import torch
from pyro import poutine
from torch import Tensor

from bnas_pyro.models.structure_priors import structure_site


@dataclass
class OuterRecord:
    """One outer step of a search: objectives, coefficients, hyperparameters, q's structure."""

    step: int
    L: float
    Q: float
    coefficients: dict[str, float]
    hyper: dict[str, list[float]]
    structure_probabilities: dict[str, list[float]]
    wall_time: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def edge_probabilities(model, guide, num_samples: int = 2000) -> dict[str, list[float]]:
    """q(argmax gamma^e = l) for every edge: exact for a Concrete q, else Monte Carlo."""
    space = model.space
    structure = getattr(guide, "structure", None)
    if structure is not None and hasattr(structure, "probabilities"):
        with torch.no_grad():
            return {e.name: p.tolist() for e, p in zip(space.edges, structure.probabilities())}
    counts = {e.name: torch.zeros(len(e)) for e in space.edges}
    x = torch.zeros((1,) + _input_shape(space))
    with torch.no_grad():
        for _ in range(num_samples):
            tr = poutine.trace(guide).get_trace(x)
            for e in space.edges:
                if len(e) == 1:
                    counts[e.name][0] += 1
                else:
                    counts[e.name][int(tr.nodes[structure_site(e.name)]["value"].argmax())] += 1
    return {k: (v / num_samples).tolist() for k, v in counts.items()}


def _input_shape(space) -> tuple[int, ...]:
    size = space.nodes[space.input]
    return size if isinstance(size, tuple) else (size,)


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
    from bnas_pyro.models.weight_priors import WEIGHT_SITE

    like = model.hyper.log_precision
    x = torch.zeros((1,) + _input_shape(model.space), dtype=like.dtype, device=like.device)
    with torch.no_grad():
        draws = [poutine.trace(guide).get_trace(x).nodes[WEIGHT_SITE]["value"]
                 for _ in range(num_samples)]
    return torch.stack(draws).mean(0)


@dataclass
class SearchResult:
    """The outcome of a :class:`~bnas_pyro.bilevel.BilevelSearch` run.

    Attributes: ``model`` (with the final h), ``guide`` (the final q), ``history`` (one
    :class:`OuterRecord` per outer step), ``wall_time`` in seconds, ``info`` (the strategy's
    name; ``"restarts"``: every restart's structure and ELBO, see :mod:`bnas_pyro.restarts`).

    The structure posterior (METHOD.md sections 2-3): :attr:`structure` and
    :attr:`structure_probability` (argmax per edge, prod_e max_l q(argmax gamma^e = l)),
    :meth:`top_structures`, :meth:`select` (argmax or DARTS-style top-k), :meth:`mean_gamma`;
    the derived network :meth:`derive`; :meth:`to_json`.
    """

    model: Any
    guide: Any
    history: list[OuterRecord]
    wall_time: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def space(self):
        return self.model.space

    def edge_probabilities(self) -> dict[str, list[float]]:
        return edge_probabilities(self.model, self.guide)

    @property
    def structure(self) -> dict[str, str]:
        """The most probable discrete structure: edge name -> primitive label (argmax per edge)."""
        return self.select("argmax")  # type: ignore[return-value]

    @property
    def structure_probability(self) -> float:
        """Its probability under q: prod_e max_l q(argmax gamma^e = l)."""
        p = 1.0
        for values in self.edge_probabilities().values():
            p *= max(values)
        return p

    @property
    def final_L(self) -> float:
        return self.history[-1].L if self.history else float("nan")

    @property
    def final_Q(self) -> float:
        return self.history[-1].Q if self.history else float("nan")

    # ------------------------------------------------------------------ structures
    def mean_gamma(self, num_samples: int = 4000) -> dict[str, list[float]]:
        """E_q[gamma^e] for every edge (Monte Carlo over q(Gamma); 1 for single-primitive edges).

        The "mean weight" of each primitive under q, as in the thesis's figures: unlike
        q(argmax gamma = l) it also reflects how close to a vertex the relaxed gamma is.
        """
        space = self.space
        like = self.model.hyper.log_precision
        x = torch.zeros((1,) + _input_shape(space), dtype=like.dtype, device=like.device)
        sums = {e.name: torch.zeros(len(e), dtype=torch.float64) for e in space.edges}
        structure = getattr(self.guide, "structure", None)
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
                    tr = poutine.trace(self.guide).get_trace(x)
                    for edge in space.edges:
                        if len(edge) == 1:
                            sums[edge.name] += 1
                        else:
                            v = tr.nodes[structure_site(edge.name)]["value"]
                            sums[edge.name] += v.exp().double().cpu()
        return {k: (v / num_samples).tolist() for k, v in sums.items()}

    def select(self, rule: Literal["argmax", "topk"] = "argmax", k: int = 2
               ) -> dict[str, str | None]:
        """The discrete structure to derive: edge name -> primitive label (``None``: dropped).

        ``"argmax"``: every edge keeps its most probable primitive under q.  ``"topk"``: as in
        DARTS, every node keeps the ``k`` incoming edges whose best non-"zero" primitive is the
        most probable, each with that primitive; the other incoming edges are dropped.
        """
        probs = self.edge_probabilities()
        space = self.space
        if rule == "argmax":
            return {e.name: e.labels[max(range(len(e)), key=lambda l, e=e: probs[e.name][l])]
                    for e in space.edges}
        if rule != "topk":
            raise ValueError(f"rule must be 'argmax' or 'topk', got {rule!r}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        choice: dict[str, str | None] = {}
        for node in space.order:
            candidates = []
            for e in space.incoming(node):
                edge = space.edges[e]
                prims = space.primitive_instances[e]
                nonzero = [l for l in range(len(edge)) if not prims[l].is_zero]
                if not nonzero:
                    choice[edge.name] = None
                    continue
                best = max(nonzero, key=lambda l, edge=edge: probs[edge.name][l])
                candidates.append((probs[edge.name][best], -e, edge.name, edge.labels[best]))
            candidates.sort(reverse=True)
            for rank, (_, _, name, label) in enumerate(candidates):
                choice[name] = label if rank < k else None
        return choice

    def probability_of(self, structure: Mapping[str, str | None]) -> float:
        """prod over the named (kept) edges of q(argmax gamma^e = label): the probability under q
        of a vertex (all edges named), or of the kept edges' choices (a top-k selection)."""
        probs = self.edge_probabilities()
        p = 1.0
        for e in self.space.edges:
            label = structure.get(e.name)
            if label is None:
                continue
            if label not in e.labels:
                raise ValueError(f"edge {e.name} has no primitive {label!r}; it has {e.labels}")
            p *= probs[e.name][e.labels.index(label)]
        return p

    def top_structures(self, k: int = 5) -> list[RankedStructure]:
        """The k most probable discrete structures under q, best first, with their probabilities
        prod_e q(argmax gamma^e = l_e) (exact for a q that factorises over edges)."""
        probs = self.edge_probabilities()
        edges = list(self.space.edges)
        ranked = top_products([list(probs[e.name]) for e in edges], k)
        return [RankedStructure({e.name: e.labels[l] for e, l in zip(edges, idx)}, p)
                for p, idx in ranked]

    # ------------------------------------------------------------------ the derived network
    def posterior_mean(self) -> Tensor:
        """E_q[W] (at gamma = 1), the flat weight vector of the supernet."""
        return posterior_mean_weights(self.model, self.guide)

    def derive(self, structure: Mapping[str, str | None] | None = None,
               rule: Literal["argmax", "topk"] = "argmax", k: int = 2,
               prune_threshold: float | None = None):
        """A plain ``torch.nn.Module`` of the chosen structure holding the posterior means.

        The structure is ``structure`` if given, else :meth:`select` (``rule``, ``k``).  The
        network equals the supernet at W = E_q[W] and gamma = the one-hot vectors of the choice
        (0 on dropped edges); its parameters are ordinary ``nn.Parameter`` values, ready to
        retrain.  ``prune_threshold``: weights whose relative variational density
        rho = exp(-mu^2 / (2 sigma^2)) reaches it are set to 0 (METHOD.md section 4).
        Returns a :class:`bnas_pyro.export.DerivedNetwork`.
        """
        from .export import build_network

        choice = dict(structure) if structure is not None else self.select(rule, k)
        weights = self.posterior_mean().clone()
        metadata: dict[str, Any] = {"structure": {k2: v for k2, v in choice.items()},
                                    "probability": self.probability_of(choice),
                                    "rule": "given" if structure is not None else rule}
        if prune_threshold is not None:
            from .complexity import prune_mask

            keep = prune_mask(self.model, self.guide, prune_threshold).to(weights.device)
            weights = torch.where(keep, weights, torch.zeros_like(weights))
            metadata["prune_threshold"] = float(prune_threshold)
            metadata["pruned"] = int((~keep).sum())
        return build_network(self.space, choice, weights, metadata)

    # ------------------------------------------------------------------ restarts
    @property
    def restarts(self) -> list[dict[str, Any]]:
        """Every restart's structure and ELBO when the result comes from
        :func:`bnas_pyro.restarts.run_restarts` (empty otherwise)."""
        return list(self.info.get("restarts", []))

    # ------------------------------------------------------------------ export
    def to_dict(self, rule: Literal["argmax", "topk"] = "argmax", k: int = 2, top: int = 5,
                include_network: bool = True) -> dict[str, Any]:
        """Everything worth keeping as plain data: the space, the chosen structure and its
        probability, the per-edge probabilities, the ``top`` structures, the final coefficients
        and hyperparameters, the restarts, and (``include_network``) the derived network."""
        from .export import _jsonable, network_to_dict

        choice = self.select(rule, k)
        last = self.history[-1] if self.history else None
        out: dict[str, Any] = {
            "format": "bnas-pyro.search-result", "version": 1,
            "space": self.space.to_dict(),
            "rule": rule, "k": k if rule == "topk" else None,
            "structure": choice,
            "probability": self.probability_of(choice),
            "edge_probabilities": self.edge_probabilities(),
            "top_structures": [r.to_dict() for r in self.top_structures(top)],
            "coefficients": None if last is None else dict(last.coefficients),
            "hyper": None if last is None else dict(last.hyper),
            "final_L": self.final_L, "final_Q": self.final_Q,
            "wall_time": self.wall_time,
            "info": _jsonable({k2: v for k2, v in self.info.items()}),
        }
        if include_network:
            out["network"] = network_to_dict(self.derive(rule=rule, k=k))
        return out

    def to_json(self, path: "str | Path | None" = None, indent: int | None = 1, **kwargs) -> str:
        """:meth:`to_dict` as JSON; written to ``path`` when given.  Load the network back with
        :func:`bnas_pyro.export.load_network` (path, text or dict)."""
        text = json.dumps(self.to_dict(**kwargs), indent=indent, allow_nan=True)
        if path is not None:
            Path(path).write_text(text)
        return text

    # ------------------------------------------------------------------ analysis
    def to_inference_data(self, **kwargs):
        """ArviZ InferenceData of the posterior (see :mod:`bnas_pyro.posterior`)."""
        from .posterior import to_inference_data

        return to_inference_data(self, **kwargs)

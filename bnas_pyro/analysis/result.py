"""What a search returns: the structure posterior q(Gamma), the derived architecture, the history.

:class:`SearchResult` holds the final (model, guide) and the history of the outer steps; its
structure-posterior queries are those of :mod:`bnas_pyro.analysis.structure_posterior`
(METHOD.md sections 2-3).  :meth:`SearchResult.select` picks the discrete structure (argmax per
edge, or the top-k incoming edges per node as in DARTS), :meth:`SearchResult.derive` builds it as
a plain ``nn.Module`` holding the posterior means E_q[W] (:mod:`bnas_pyro.analysis.export`), and
:meth:`SearchResult.to_dict` / :meth:`SearchResult.to_json` write the result as versioned JSON
(format ``bnas-pyro.search-result``) whose network :func:`bnas_pyro.analysis.export.load_network`
rebuilds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import torch
from torch import Tensor

from .complexity import prune_mask
from .export import build_network, jsonable, network_to_dict
from .structure_posterior import (RankedStructure, edge_probabilities, mean_gamma,
                                  posterior_mean_weights, top_products)

RESULT_FORMAT = "bnas-pyro.search-result"
#: 2: ``num_structures``, optional ``history``; a run's ``result.json`` adds ``analysis``
RESULT_FORMAT_VERSION = 2


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


@dataclass
class SearchResult:
    """The outcome of a :class:`~bnas_pyro.search.bilevel.BilevelSearch` run.

    Attributes: ``model`` (with the final h), ``guide`` (the final q), ``history`` (one
    :class:`OuterRecord` per outer step), ``wall_time`` in seconds, ``info`` (the strategy's
    name; ``"restarts"``: every restart's structure and ELBO, see :mod:`bnas_pyro.search.restarts`;
    ``"enumeration"``: the runs of the ``enumerate`` mode, see :mod:`bnas_pyro.search.enumeration`).

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
        return mean_gamma(self.model, self.guide, num_samples)

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
        edges = list(self.space.edges)
        if getattr(self.guide, "joint", False) and hasattr(self.guide, "structure_probabilities"):
            q = self.guide.structure_probabilities().detach()     # a joint q(s): exact
            order = torch.argsort(q, descending=True)[:k].tolist()
            choices = self.guide.structure.choices
            return [RankedStructure({e.name: e.labels[int(l)] for e, l in zip(edges, choices[i])},
                                    float(q[i])) for i in order]
        probs = self.edge_probabilities()
        ranked = top_products([list(probs[e.name]) for e in edges], k)
        return [RankedStructure({e.name: e.labels[l] for e, l in zip(edges, idx)}, p)
                for p, idx in ranked]

    def rank(self, x: Tensor, y: Tensor, k: int = 5, refit_steps: int = 300,
             num_draws: int = 200, seed: int = 0, bound: str = "auto", weights: str = "auto",
             batch_size: int | None = None, structures: list | None = None,
             max_rows: int | None = None) -> list:
        """The top-k discrete structures under q (any guide: its q(s) or the product of its
        per-edge marginals), each with an evidence estimate on the training data ``x, y`` (q(W | s)
        refitted at the vertex, then the ELBO or the importance-weighted bound) and its standard
        error, ordered by evidence + log prior, with the probability that each beats the next
        (:func:`bnas_pyro.analysis.ranking.rank_structures`; ``max_rows``: the evidence draws on
        a seeded subset of at most that many rows, scaled to all)."""
        from .ranking import rank_structures

        return rank_structures(self.model, self.guide, x, y, k, refit_steps, num_draws, seed=seed,
                               bound=bound, weights=weights, batch_size=batch_size,
                               structures=structures, max_rows=max_rows)

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
        Returns a :class:`bnas_pyro.analysis.export.DerivedNetwork`.
        """
        choice = dict(structure) if structure is not None else self.select(rule, k)
        weights = self.posterior_mean().clone()
        metadata: dict[str, Any] = {"structure": {k2: v for k2, v in choice.items()},
                                    "probability": self.probability_of(choice),
                                    "rule": "given" if structure is not None else rule}
        if prune_threshold is not None:
            keep = prune_mask(self.model, self.guide, prune_threshold).to(weights.device)
            weights = torch.where(keep, weights, torch.zeros_like(weights))
            metadata["prune_threshold"] = float(prune_threshold)
            metadata["pruned"] = int((~keep).sum())
        return build_network(self.space, choice, weights, metadata)

    # ------------------------------------------------------------------ restarts
    @property
    def restarts(self) -> list[dict[str, Any]]:
        """Every restart's structure and ELBO when the result comes from
        :func:`bnas_pyro.search.restarts.run_restarts` (empty otherwise)."""
        return list(self.info.get("restarts", []))

    # ------------------------------------------------------------------ export
    def to_dict(self, rule: Literal["argmax", "topk"] = "argmax", k: int = 2, top: int = 5,
                include_network: bool = True, include_history: bool = False) -> dict[str, Any]:
        """Everything worth keeping as plain data (format ``bnas-pyro.search-result``, version
        :data:`RESULT_FORMAT_VERSION`): the space, the chosen structure and its probability, the
        per-edge probabilities, the ``top`` structures, the final coefficients and
        hyperparameters, ``info`` (the strategy; restarts and enumeration runs when the result
        comes from them), and on request the derived network and the history of the outer steps.
        A run directory's ``result.json`` is this dictionary with an ``analysis`` block."""
        choice = self.select(rule, k)
        last = self.history[-1] if self.history else None
        out: dict[str, Any] = {
            "format": RESULT_FORMAT, "version": RESULT_FORMAT_VERSION,
            "space": self.space.to_dict(),
            "num_structures": self.space.num_structures,
            "rule": rule, "k": k if rule == "topk" else None,
            "structure": choice,
            "probability": self.probability_of(choice),
            "edge_probabilities": self.edge_probabilities(),
            "top_structures": [r.to_dict() for r in self.top_structures(top)],
            "coefficients": None if last is None else dict(last.coefficients),
            "hyper": None if last is None else dict(last.hyper),
            "final_L": self.final_L, "final_Q": self.final_Q,
            "wall_time": self.wall_time,
            "info": jsonable({k2: v for k2, v in self.info.items()}),
        }
        if include_history:
            out["history"] = [r.to_dict() for r in self.history]
        if include_network:
            out["network"] = network_to_dict(self.derive(rule=rule, k=k))
        return out

    def to_json(self, path: "str | Path | None" = None, indent: int | None = 1, **kwargs) -> str:
        """:meth:`to_dict` as JSON; written to ``path`` when given.  Load the network back with
        :func:`bnas_pyro.analysis.export.load_network` (path, text or dict)."""
        text = json.dumps(self.to_dict(**kwargs), indent=indent, allow_nan=True)
        if path is not None:
            Path(path).write_text(text)
        return text

    # ------------------------------------------------------------------ analysis
    def to_inference_data(self, **kwargs):
        """ArviZ InferenceData of the posterior (see :mod:`bnas_pyro.analysis.arviz_data`)."""
        from .arviz_data import to_inference_data

        return to_inference_data(self, **kwargs)

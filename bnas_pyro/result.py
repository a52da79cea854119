"""What a search returns: the posterior over structures and the run's history.

P_q(argmax gamma^e = l) = softmax(s_q^e)_l for a Concrete q (METHOD.md section 2), so the most
probable discrete structure is the argmax per edge and its probability under q is the product of
the per-edge maxima (edges are independent under q).  For guides without a Concrete structure part
(e.g. Pyro's ``AutoNormal``) the probabilities are Monte Carlo frequencies of the argmax.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from pyro import poutine

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


@dataclass
class SearchResult:
    """The outcome of a :class:`~bnas_pyro.bilevel.BilevelSearch` run.

    Attributes: ``model`` (with the final h), ``guide`` (the final q), ``history`` (one
    :class:`OuterRecord` per outer step), ``wall_time`` in seconds.
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
        """The most probable discrete structure: edge name -> primitive label."""
        probs = self.edge_probabilities()
        return {e.name: e.labels[max(range(len(e)), key=lambda l: probs[e.name][l])]
                for e in self.space.edges}

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

    # ------------------------------------------------------------------ analysis and export
    def to_inference_data(self, **kwargs):
        """ArviZ InferenceData of the posterior (see :mod:`bnas_pyro.posterior`)."""
        from .posterior import to_inference_data

        return to_inference_data(self, **kwargs)

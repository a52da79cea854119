"""Scores of a fitted search under the classical model-selection criteria (METHOD.md section 4).

The criteria themselves are modes of the same machinery (:mod:`bnas_pyro.modes`: ``ml``,
``map``, ``evidence``, ``holdout``); this module gives each criterion's *score* of a fitted
result, higher is better, to compare results (restarts, the runs of ``enumerate``, spaces):

- ``ml``: E_q log p(y | X, W, Gamma) on the training data;
- ``map``: E_q log p(y | X, W_map, Gamma) + log p(W_map | h) (KL(Delta || p) = -log p(W_map | h));
- ``evidence``: the ELBO, E_q log p(y | ...) - KL(q(W) || p) - KL(q(Gamma) || p);
- ``holdout``: E_q log p(y_val | X_val, W, Gamma);
- ``aic``: E_q log p(y | ...) - k;  ``bic``: E_q log p(y | ...) - (k / 2) ln m, with k the number of
  *informative* parameters, those whose KL(q(w_i) || p(w_i | h)) exceeds ``threshold`` nats
  (METHOD.md section 4).  The count is not differentiable, so AIC and BIC score fitted results
  instead of driving the hypergradient.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

from bnas_pyro.objectives import guide_terms

from .complexity import informative_parameters

CRITERIA = ("ml", "map", "evidence", "holdout", "aic", "bic")
_ALIASES = {"maximum_likelihood": "ml", "hold-out": "holdout", "hold_out": "holdout"}


def available_criteria() -> list[str]:
    return sorted(CRITERIA)


def _criterion(name: str) -> str:
    key = _ALIASES.get(name, name)
    if key not in CRITERIA:
        raise ValueError(f"unknown criterion {name!r}; available: {', '.join(available_criteria())}")
    return key


def mean_terms(model, guide, x: Tensor, y: Tensor | None, num_data: int,
               num_particles: int) -> tuple[Tensor, Tensor, Tensor]:
    """Monte Carlo means over q of (log-likelihood, KL of the weights, KL of the structure)."""
    with torch.no_grad():
        terms = [guide_terms(model, guide, x, y, num_data) for _ in range(num_particles)]
    return (torch.stack([t.log_likelihood for t in terms]).mean(),
            torch.stack([t.kl_weights for t in terms]).mean(),
            torch.stack([t.kl_structure for t in terms]).mean())


def score(criterion: str, result_or_model: Any, x: Tensor, y: Tensor | None = None, guide=None,
          x_val: Tensor | None = None, y_val: Tensor | None = None, threshold: float = 1.0,
          num_particles: int = 200) -> float:
    """The value of ``criterion`` for a fitted search (a SearchResult, or a model with ``guide``);
    higher is better.  Monte Carlo over q with ``num_particles`` draws; ``threshold`` is the KL
    (nats) above which a parameter counts as informative (``aic``, ``bic``)."""
    name = _criterion(criterion)
    model = getattr(result_or_model, "model", result_or_model)
    guide = guide if guide is not None else getattr(result_or_model, "guide")
    if name == "holdout":
        if x_val is None:
            raise ValueError(f"criterion {criterion!r} needs x_val, y_val")
        return float(mean_terms(model, guide, x_val, y_val, x_val.shape[0], num_particles)[0])
    n = x.shape[0]
    loglik, kl_w, kl_s = mean_terms(model, guide, x, y, n, num_particles)
    if name == "evidence":
        return float(loglik - kl_w - kl_s)
    if name == "map":
        return float(loglik - kl_w)
    if name == "ml":
        return float(loglik)
    k = int(informative_parameters(model, guide, threshold).sum())
    penalty = k if name == "aic" else 0.5 * k * math.log(n)
    return float(loglik - penalty)


def rank(results: Sequence[Any], criterion: str, x: Tensor, y: Tensor | None = None,
         **score_options: Any) -> list[tuple[float, int]]:
    """(score, index) of each result under ``criterion``, best first."""
    scores = [(score(criterion, r, x, y, **score_options), i) for i, r in enumerate(results)]
    return sorted(scores, key=lambda s: -s[0])


__all__ = ["CRITERIA", "available_criteria", "mean_terms", "rank", "score"]

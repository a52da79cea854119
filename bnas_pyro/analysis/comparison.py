"""Comparing found structures by their evidence, with PSIS-LOO beside it as a predictive check.

:func:`compare` ranks several search results by the evidence of the structure each one found
(METHOD.md sections 2-3): for result r with structure s_r (its argmax structure, what it derives)
and hyperparameters h_r, q(W | s_r) is refitted at the vertex and log p(y | X, s_r, h_r) estimated
with its standard error (:func:`bnas_pyro.analysis.ranking.evidence_of`: the ELBO or the
importance-weighted bound, one bound for the whole table, :func:`~bnas_pyro.analysis.ranking.
choose_bound`).  Differences of log evidence are log Bayes factors; ``beats_next`` is the
probability that a row's evidence exceeds the next row's, Phi(diff / sqrt(se_1^2 + se_2^2)).

PSIS-LOO (Vehtari, Gelman and Gabry 2017) on draws of each result's q stays as a predictive check
(``az.compare``, :mod:`bnas_pyro.analysis.arviz_data`): its columns sit beside the evidence, with
the Pareto-k diagnostics of every result (max k and the number of points above 0.7), and a
warning names every result with k > 0.7, where elpd_loo is unreliable.  With ``by="loo"`` the
table is ordered by elpd_loo instead (the only order for InferenceData, which carries no model to
refit).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping, Sequence

from torch import Tensor

from .arviz_data import compare_loo, loo, to_inference_data
from .ranking import (beats_probability, choose_bound, evidence_of, structure_index,
                      unrankable_reason)

#: Pareto k above which PSIS-LOO's estimate for a point is unreliable (Vehtari et al. 2017)
PARETO_K_WARN = 0.7


def _named(results, names) -> dict[str, Any]:
    if isinstance(results, Mapping):
        items = dict(results)
    else:
        results = list(results)
        labels = list(names) if names is not None else [f"model_{i}" for i in range(len(results))]
        if len(labels) != len(results):
            raise ValueError(f"{len(labels)} names for {len(results)} results")
        items = dict(zip(labels, results))
    if len(items) < 2:
        raise ValueError("compare needs at least two results")
    return items


def _is_inference_data(item) -> bool:
    return hasattr(item, "log_likelihood") and hasattr(item, "posterior")


def compare(results: "Mapping[str, Any] | Sequence[Any]", x: Tensor | None = None,
            y: Tensor | None = None, names: Sequence[str] | None = None, *,
            by: str = "evidence", refit_steps: int = 300, evidence_draws: int = 200,
            bound: str = "auto", num_draws: int = 400, num_chains: int = 2, seed: int | None = 0,
            ic: str = "loo", **kwargs):
    """Rank search results by the evidence of their structures; PSIS-LOO as a predictive check.

    ``results``: SearchResults (or, with ``by="loo"``, InferenceData), a mapping name -> item or
    a sequence named by ``names`` (default ``model_0, model_1, ...``).  ``x, y``: the data every
    result is scored on (its training data: the evidence is log p(y | X, s, h)).  Returns a pandas
    DataFrame, best first, indexed by name, with columns ``rank``, ``evidence``, ``evidence_se``,
    ``evidence_diff`` (to the best), ``beats_next``, ``bound``, ``elbo``, ``iw_bound``,
    ``iw_ess``, ``structure`` (module docstring) and the PSIS-LOO check: ``elpd_loo``,
    ``elpd_loo_se``, ``p_loo``, ``elpd_diff``, ``loo_weight``, ``dse``, ``pareto_k_max``,
    ``pareto_k_over_0.7``.  ``refit_steps``, ``evidence_draws``, ``bound``: the evidence estimate
    (:func:`bnas_pyro.analysis.ranking.rank_structures`); ``num_draws``, ``num_chains``, ``ic``
    and ``kwargs``: ``az.compare``'s (draws of q for the InferenceData).
    """
    import pandas as pd

    if by not in ("evidence", "loo"):
        raise ValueError(f"by must be 'evidence' or 'loo', got {by!r}")
    items = _named(results, names)
    data = {}
    for name, item in items.items():
        if _is_inference_data(item):
            if by == "evidence":
                raise ValueError(f"{name!r} is InferenceData: it carries no model to refit, so "
                                 f"it has no evidence; pass its SearchResult, or by='loo'")
            data[name] = item
        else:
            if x is None or y is None:
                raise ValueError(f"{name!r} is a search result: pass the data (x, y) to compare on")
            data[name] = to_inference_data(item, x, y, num_draws=num_draws, num_chains=num_chains,
                                           seed=seed, num_prior_draws=2 * num_chains)
    table = compare_loo(data, ic=ic, **kwargs)
    rows: dict[str, dict[str, Any]] = {}
    flagged = []
    for name, idata in data.items():
        check = loo(idata, pointwise=True)
        k = check.pareto_k.values
        over = int((k > PARETO_K_WARN).sum())
        if over:
            flagged.append(f"{name!r}: {over} of {k.size} points (max {float(k.max()):.2f})")
        rows[name] = {"elpd_loo": float(table.loc[name, "elpd_loo"]),
                      "elpd_loo_se": float(table.loc[name, "se"]),
                      "p_loo": float(table.loc[name, "p_loo"]),
                      "elpd_diff": float(table.loc[name, "elpd_diff"]),
                      "loo_weight": float(table.loc[name, "weight"]),
                      "dse": float(table.loc[name, "dse"]),
                      "pareto_k_max": float(k.max()), f"pareto_k_over_{PARETO_K_WARN}": over}
    if flagged:
        tail = " (a predictive check only; the ranking is by evidence)" if by == "evidence" else ""
        warnings.warn(f"PSIS-LOO: Pareto k > {PARETO_K_WARN} in " + "; ".join(flagged)
                      + f": elpd_loo is unreliable there{tail}", stacklevel=2)
    if by == "evidence":
        estimates = {}
        structures = {}
        for name, item in items.items():
            reason = unrankable_reason(item.model)
            if reason is not None:
                raise ValueError(f"{name!r} has no evidence estimate: {reason}; use by='loo'")
            choice = structure_index(item.model, item.structure)
            estimates[name] = evidence_of(item.model, item.guide, choice, x, y, refit_steps,
                                          evidence_draws, seed=0 if seed is None else seed)
            structures[name] = dict(item.structure)
        chosen = choose_bound(list(estimates.values()), bound, evidence_draws)
        order = sorted(items, key=lambda n: -estimates[n].value(chosen)[0])
        best = estimates[order[0]].value(chosen)[0]
        for i, name in enumerate(order):
            value, se = estimates[name].value(chosen)
            beats = math.nan
            if i + 1 < len(order):
                nv, nse = estimates[order[i + 1]].value(chosen)
                beats = beats_probability(value, se, nv, nse)
            est = estimates[name]
            rows[name] = {"rank": i, "evidence": value, "evidence_se": se,
                          "evidence_diff": best - value, "beats_next": beats, "bound": chosen,
                          "elbo": est.elbo, "iw_bound": est.iw_bound, "iw_ess": est.iw_ess,
                          "structure": structures[name], **rows[name]}
    else:
        order = list(table.index)
        for i, name in enumerate(order):
            rows[name] = {"rank": i, **rows[name]}
    return pd.DataFrame([rows[n] for n in order], index=pd.Index(order, name="name"))


__all__ = ["PARETO_K_WARN", "compare"]

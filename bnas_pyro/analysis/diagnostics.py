"""Warnings about a search that ended in nonsense: the ``warnings`` list of ``result.json``.

A search can end with numbers that look like a result and are not one.  :func:`search_warnings`
checks the three failures seen in practice and names the likely cause of each:

- ``non_finite``: an objective L or Q of the history is NaN or infinite (the optimisation
  diverged; the step size is too large or the data are badly scaled);
- ``disconnected``: the found structure has no path of non-zero operations from the input to the
  output (:func:`bnas_pyro.analysis.collapse.collapse_statistics`), so its predictions do not
  depend on the input and score at chance level.  On a short search the weights are still near
  their prior mean 0 and every parametric primitive looks like ``zero`` to the evidence, which
  then prefers the simpler one (METHOD.md section 4, the Occam factor);
- ``not_converged``: the search did not settle.  Over the last quarter of the outer steps the
  objective L still gained more than ``gain_fraction`` of its total gain, or a per-edge
  structure probability q(argmax gamma^e = l) still moved by more than ``probability_change``,
  or the search had fewer than ``min_steps`` outer steps to judge from.  These thresholds are
  heuristics (not a test of convergence): a search flagged here should be run longer.

Each warning is ``{"code", "message", "cause"}``; :func:`warning_lines` gives the lines the
summary shows first.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from bnas_pyro.analysis.collapse import collapse_statistics


def _history_values(history: Sequence[Any], key: str) -> list[float]:
    out = []
    for record in history:
        value = record.get(key) if isinstance(record, Mapping) else getattr(record, key, None)
        out.append(float("nan") if value is None else float(value))
    return out


def _probabilities(record: Any) -> Mapping[str, Sequence[float]]:
    if isinstance(record, Mapping):
        return record.get("structure_probabilities", {})
    return getattr(record, "structure_probabilities", {})


SHORT_SEARCH_CAUSE = ("most likely too short a search: with the weights still near 0 the evidence "
                      "prefers 'zero' on every edge; raise search.epochs (or remove 'zero' from "
                      "the primitives)")


def structure_warnings(space: Any, structure: Mapping[str, str],
                       cause: str = SHORT_SEARCH_CAUSE) -> list[dict[str, str]]:
    """The ``disconnected`` warning of any structure (of this search or of a baseline's), with
    ``cause`` as its likely cause; empty when the input reaches the output."""
    if not collapse_statistics(space, structure)["disconnected"]:
        return []
    return [{"code": "disconnected",
             "message": "the found structure has no path of non-zero operations from the input "
                        "to the output: its predictions do not depend on the input (chance level)",
             "cause": cause}]


def search_warnings(space: Any, structure: Mapping[str, str], history: Sequence[Any],
                    gain_fraction: float = 0.1, probability_change: float = 0.1,
                    min_steps: int = 4) -> list[dict[str, str]]:
    """The warnings of a finished search (see the module doc); empty when none applies."""
    warnings: list[dict[str, str]] = []
    L = _history_values(history, "L")
    Q = _history_values(history, "Q")
    bad = [i for i, (a, b) in enumerate(zip(L, Q)) if not (math.isfinite(a) and math.isfinite(b))]
    if bad:
        warnings.append({
            "code": "non_finite",
            "message": f"the objective became non-finite (NaN or inf) at outer step {bad[0]}",
            "cause": "the optimisation diverged: lower search.lr or search.hyper_lr, or check "
                     "the scale of the data"})
    warnings += structure_warnings(space, structure)
    steps = len(history)
    if steps < min_steps:
        warnings.append({
            "code": "not_converged",
            "message": f"the search had only {steps} outer step(s): too few to tell whether it "
                       f"converged",
            "cause": "raise search.epochs or lower search.inner_steps"})
    elif not bad:
        tail = steps - max(1, steps // 4) - 1
        total_gain = L[-1] - L[0]
        late_gain = L[-1] - L[tail]
        moved = 0.0
        first, last = _probabilities(history[tail]), _probabilities(history[-1])
        for edge, probs in last.items():
            if edge in first:
                moved = max(moved, max(abs(a - b) for a, b in zip(probs, first[edge])))
        reasons = []
        if total_gain > 0 and late_gain > gain_fraction * total_gain:
            reasons.append(f"the objective L gained {late_gain:.4g} in the last quarter of the "
                           f"steps ({late_gain / total_gain:.0%} of its total gain)")
        if moved > probability_change:
            reasons.append(f"a structure probability still moved by {moved:.2f} in the last "
                           f"quarter of the steps")
        if reasons:
            warnings.append({
                "code": "not_converged",
                "message": "the search had not converged: " + "; ".join(reasons),
                "cause": "too few epochs for this data set and space: raise search.epochs"})
    return warnings


def warning_lines(result: Mapping[str, Any]) -> list[str]:
    """The summary's first lines: one ``WARNING`` line per entry of ``result["warnings"]``."""
    lines = []
    for w in result.get("warnings", []) or []:
        lines.append(f"WARNING [{w['code']}]: {w['message']}; likely cause: {w['cause']}")
    return lines


__all__ = ["SHORT_SEARCH_CAUSE", "search_warnings", "structure_warnings", "warning_lines"]

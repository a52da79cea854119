"""Full enumeration of structures: the runs f_1..f_N of the ``enumerate`` mode (METHOD.md
section 4, mode 4).

Run i is an ordinary :class:`~bnas_pyro.search.bilevel.BilevelSearch` whose set P holds the
structures found by runs 1..i-1 (:meth:`~bnas_pyro.modes.EnumerateMode.targets`) and whose
coefficients have c_comb < 0 (:meth:`~bnas_pyro.modes.EnumerateMode.run_schedule`), so its
structure prior is pushed away from them.  The mode says what each run is; this driver runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import Tensor

from bnas_pyro.analysis.result import SearchResult
from bnas_pyro.modes import EnumerateMode

from .bilevel import BilevelSearch

#: ``factory(i) -> (model, guide)``: a fresh model and guide for run i
RunFactory = Callable[[int], "tuple[Any, Any]"]


@dataclass
class EnumerationResult:
    """The runs f_1..f_N of an enumeration (METHOD.md section 4, mode 4): the structure of each
    run (argmax of its q(Gamma)), in order, with its probability under q; with
    ``keep_results``, every run's :class:`~bnas_pyro.analysis.result.SearchResult` and the
    search state it ended in (``BilevelSearch.state_dict()``, loadable by the same resume path)."""

    structures: list[dict[str, str]]
    probabilities: list[float]
    results: list[SearchResult] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)

    @property
    def distinct(self) -> list[dict[str, str]]:
        """The distinct structures, in the order they were first visited."""
        seen, out = set(), []
        for s in self.structures:
            key = tuple(sorted(s.items()))
            if key not in seen:
                seen.add(key)
                out.append(s)
        return out

    @property
    def num_distinct(self) -> int:
        return len(self.distinct)

    def summary(self) -> str:
        lines = []
        for i, (s, p) in enumerate(zip(self.structures, self.probabilities)):
            lines.append(f"run {i + 1}: {s}  q = {p:.3f}")
        lines.append(f"{self.num_distinct} distinct structures in {len(self.structures)} runs")
        return "\n".join(lines)


def run_enumeration(mode: EnumerateMode, factory: RunFactory, x: Tensor, y: Tensor | None = None,
                    num_runs: int | None = None, seed: int = 0, keep_results: bool = False,
                    **search_options: Any) -> EnumerationResult:
    """Run the enumeration described by ``mode``.

    Args:
        mode: the :class:`~bnas_pyro.modes.EnumerateMode` (coefficients and P of every run).
        factory: ``factory(i) -> (model, guide)``, a fresh model and guide for run i.
        x, y: the data.
        num_runs: N (default: ``mode.num_runs`` or the space's number of structures).
        seed: run i uses seed ``seed + i``.
        keep_results: keep every run's result and final search state.
        search_options: passed to :class:`~bnas_pyro.search.bilevel.BilevelSearch`
            (``inner_steps``, ``outer_steps``, ``lr``, ``hyper_lr``, ``progress``, ...); the comb
            term is estimated with ``comb_samples`` = 256 draws unless given (see
            :class:`~bnas_pyro.modes.EnumerateMode`).
    """
    if not isinstance(mode, EnumerateMode):
        raise TypeError(f"run_enumeration needs an EnumerateMode, got {type(mode).__name__}")
    options = dict(search_options)
    options.setdefault("hypergradient", mode.hypergradient)
    options.setdefault("comb_samples", 256)
    found: list[dict[str, str]] = []
    probs: list[float] = []
    out = EnumerationResult(found, probs)
    n = num_runs if num_runs is not None else mode.num_runs
    i = 0
    while True:
        model, guide = factory(i)
        if n is None:
            n = model.space.num_structures
        if i >= n:
            break
        search = BilevelSearch(model, guide, mode.run_schedule(i),
                               comb_targets=mode.targets(model.space, found),
                               seed=seed + i, **options)
        result = search.run(x, y)
        found.append(dict(result.structure))
        probs.append(float(result.structure_probability))
        if keep_results:
            out.results.append(result)
            out.states.append(search.state_dict())
        i += 1
    return out


__all__ = ["EnumerationResult", "RunFactory", "run_enumeration"]

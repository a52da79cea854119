"""Full enumeration of structures: the runs f_1..f_N of the ``enumerate`` mode (METHOD.md
section 4, mode 4).

Run i is an ordinary :class:`~bnas_pyro.search.bilevel.BilevelSearch` whose set P holds the
structures found by runs 1..i-1 (:meth:`~bnas_pyro.modes.EnumerateMode.targets`) and whose
coefficients have c_comb < 0 (:meth:`~bnas_pyro.modes.EnumerateMode.run_schedule`), so its
structure prior is pushed away from them.  The mode says what each run is; this driver runs them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import Tensor

from bnas_pyro.analysis.result import SearchResult
from bnas_pyro.modes import EnumerateMode

from .bilevel import BilevelSearch
from .resume import checkpointing, driver_entry, load_driver_state, restored_result

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
    #: by run index: structure, probability and final state (what a checkpoint keeps)
    finished: dict[int, dict[str, Any]] = field(default_factory=dict)

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
                    checkpoint_dir: "str | os.PathLike | None" = None, resume: bool = False,
                    **search_options: Any) -> EnumerationResult:
    """Run the enumeration described by ``mode``.

    Args:
        mode: the :class:`~bnas_pyro.modes.EnumerateMode` (coefficients and P of every run).
        factory: ``factory(i) -> (model, guide)``, a fresh model and guide for run i.
        x, y: the data.
        num_runs: N (default: ``mode.num_runs`` or the space's number of structures).
        seed: run i uses seed ``seed + i``.
        keep_results: keep every run's result and final search state (each result is rebuilt
            from its run's final state, :func:`~bnas_pyro.search.resume.restored_result`).
        checkpoint_dir: write ``checkpoint.pt`` there: the running run's search state (every
            ``checkpoint_every`` outer steps) with which run it is and the finished runs'
            structures, probabilities and final states (:mod:`bnas_pyro.search.resume`).
        resume: continue from ``checkpoint_dir``'s checkpoint: finished runs are not run again,
            the running one continues where it stopped; the result equals an uninterrupted run's.
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
    finished: dict[int, dict[str, Any]] = {}
    running = None
    i = 0
    while True:
        model, guide = factory(i)
        if n is None:
            n = model.space.num_structures
        if i == 0 and resume:
            state, finished = load_driver_state(checkpoint_dir, "enumerate", n)
            running = None if state is None else state["driver"]["current"]
        if i >= n:
            break
        search = BilevelSearch(model, guide, mode.run_schedule(i),
                               comb_targets=mode.targets(model.space, found),
                               seed=seed + i, **options)
        if i not in finished:
            checkpointing(search, checkpoint_dir, driver_entry("enumerate", n, i, finished))
            result = search.run(x, y, resume=resume and i == running)
            finished[i] = {"structure": dict(result.structure),
                           "probability": float(result.structure_probability),
                           "state": search.state_dict()}
        entry = finished[i]
        found.append(dict(entry["structure"]))
        probs.append(float(entry["probability"]))
        if keep_results:
            out.results.append(restored_result(search, entry["state"]))
            out.states.append(entry["state"])
        i += 1
    out.finished = finished
    return out


def finished_entry(runs: EnumerationResult) -> dict[str, Any]:
    """The ``"driver"`` entry of a checkpoint after all runs of ``runs`` (kept with the final
    state, so a resumed finished enumeration rebuilds its runs without running them)."""
    return driver_entry("enumerate", len(runs.structures), len(runs.structures), runs.finished)


__all__ = ["EnumerationResult", "RunFactory", "finished_entry", "run_enumeration"]

"""Restarts: run a search several times from new initialisations and keep the best by final ELBO.

METHOD.md section 3: the common failure of a structure search is early lock-in to a wrong
structure, more so at a low temperature; in a prototype, two restarts kept by their final ELBO
lifted the polynomial example from 7-8 to 9 of 10 seeds.  The ELBO

    ELBO(q) = E_q log p(y | X, W, Gamma) - KL(q(W, Gamma) || p(W, Gamma | h))  <=  log p(y | X, h)

(all coefficients 1, at the final h and c_temp) is a lower bound on the evidence, so the restart
with the highest ELBO is the one whose (q, h) explains the data best.  Every restart's structure,
its probability under q and its ELBO are kept in the report, so the spread is visible.

Restarts run in turn or in parallel processes (``processes > 1``); each restart's final search
state is kept, and the best restart is rebuilt from it by the same ``build`` function (in turn or
in workers, fresh or resumed: the same result), so ``build`` must be picklable for processes (a module-level
function or a ``functools.partial`` of one) and every custom primitive must be registered when
its module is imported.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from bnas_pyro.analysis.result import SearchResult
from bnas_pyro.objectives import estimate_elbo

from .bilevel import BilevelSearch
from .checkpoint import save_checkpoint
from .resume import checkpointing, driver_entry, load_driver_state, restored_result

BuildFn = Callable[[int], "BilevelSearch"]


@dataclass
class RestartRecord:
    """One restart (METHOD.md section 3): its seed, structure, q(structure), final
    ELBO = E_q log p(y|X,W,Gamma) - KL(q || p) (+ its Monte Carlo standard error), final L and Q."""

    index: int
    seed: int
    structure: dict[str, str]
    structure_probability: float
    elbo: float
    elbo_se: float
    final_L: float
    final_Q: float
    wall_time: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RestartReport:
    """All restarts of a search and the best one, argmax_r ELBO_r (METHOD.md section 3).

    ``best`` is the :class:`SearchResult` of restart ``best_index``; its ``info["restarts"]``
    holds every record too, so it travels with the result's JSON.  ``best_state`` is the state
    its search ended in (``BilevelSearch.state_dict()``: a checkpoint the same resume path loads).
    """

    best: SearchResult
    best_index: int
    records: list[RestartRecord] = field(default_factory=list)
    best_state: dict[str, Any] | None = None

    @property
    def structure(self) -> dict[str, str]:
        return self.best.structure

    def structure_counts(self) -> Counter:
        """How many restarts ended at each structure (the spread)."""
        return Counter(tuple(sorted(r.structure.items())) for r in self.records)

    @property
    def elbos(self) -> list[float]:
        return [r.elbo for r in self.records]

    def summary(self) -> str:
        lines = []
        for r in self.records:
            mark = "*" if r.index == self.best_index else " "
            s = ", ".join(f"{k}: {v}" for k, v in r.structure.items())
            lines.append(f"{mark} restart {r.index} (seed {r.seed}): ELBO {r.elbo:.3f} +- "
                         f"{r.elbo_se:.3f}, q = {r.structure_probability:.3f}, {s}")
        counts = self.structure_counts()
        lines.append(f"{len(counts)} distinct structure(s) in {len(self.records)} restarts; "
                     f"kept restart {self.best_index} (highest ELBO)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"best_index": self.best_index, "records": [r.to_dict() for r in self.records]}


def _run_one(build: BuildFn, index: int, seed: int, x: Tensor, y: Tensor | None,
             x_val: Tensor | None, y_val: Tensor | None, elbo_particles: int,
             num_threads: int | None, checkpoint_dir: "str | os.PathLike | None" = None,
             resume: bool = False, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One restart (also the body of a worker process): its record, final state and info.

    With ``checkpoint_dir`` the restart's search checkpoints there (with the driver's ``extra``);
    ``resume`` continues it from the checkpoint there."""
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    start = time.perf_counter()
    search = checkpointing(build(seed), checkpoint_dir, extra or {})
    result = search.run(x, y, x_val, y_val, resume=resume)
    state = search.state_dict()   # where the search ended (before the ELBO's draws)
    with torch.no_grad():
        elbo, se = estimate_elbo(search.model, search.guide, x, y, num_particles=elbo_particles)
    record = RestartRecord(index, seed, dict(result.structure), float(result.structure_probability),
                           float(elbo), float(se), float(result.final_L), float(result.final_Q),
                           time.perf_counter() - start)
    return {"record": record.to_dict(), "state": state, "info": dict(result.info)}


def run_restarts(build: BuildFn, x: Tensor, y: Tensor | None = None, num_restarts: int = 2, *,
                 seed: int = 0, processes: int = 1, elbo_particles: int = 200,
                 x_val: Tensor | None = None, y_val: Tensor | None = None,
                 mp_context: str = "spawn", num_threads: int | None = 1,
                 checkpoint_dir: "str | os.PathLike | None" = None,
                 resume: bool = False) -> RestartReport:
    """Run ``num_restarts`` searches and keep the one with the best final ELBO.

    Args:
        build: ``build(seed) -> BilevelSearch``, a fresh model, guide and search for one restart;
            the seed should set the guide's initialisation and the search's ``seed``.
        x, y (x_val, y_val): the data, as for :meth:`BilevelSearch.run`.
        num_restarts: how many searches.
        seed: restart r uses seed ``seed + r``.
        processes: run that many restarts at once in worker processes (1: in turn, here).
        elbo_particles: Monte Carlo draws for each final ELBO (its standard error is reported).
        mp_context: the multiprocessing start method for workers.
        num_threads: torch threads per restart (``None``: leave as is).
        checkpoint_dir: write ``checkpoint.pt`` there: the running restart's search state (every
            ``checkpoint_every`` outer steps) with which restart it is and the finished restarts'
            records and final states (:mod:`bnas_pyro.search.resume`); at the end, the kept
            restart's state.  In worker processes (``processes > 1``) it is written as each
            restart finishes.
        resume: continue from ``checkpoint_dir``'s checkpoint: finished restarts are not run
            again, the running one continues where it stopped (in turn; in workers it starts
            over), and the report equals an uninterrupted run's.
    Returns:
        a :class:`RestartReport`; ``report.best`` is the kept :class:`SearchResult`, rebuilt by
        ``build`` from the kept restart's final state.
    """
    if num_restarts < 1:
        raise ValueError(f"num_restarts must be >= 1, got {num_restarts}")
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    state, finished = (load_driver_state(checkpoint_dir, "restarts", num_restarts) if resume
                       else (None, {}))
    running = None if state is None else state["driver"]["current"]

    def extra(current: int) -> dict[str, Any]:
        return driver_entry("restarts", num_restarts, current, finished)

    def job(r: int) -> tuple:
        return (build, r, seed + r, x, y, x_val, y_val, elbo_particles, num_threads)

    todo = [r for r in range(num_restarts) if r not in finished]
    if processes == 1 or len(todo) <= 1:
        saved = torch.get_num_threads()
        try:
            for r in todo:
                finished[r] = _run_one(*job(r), checkpoint_dir=checkpoint_dir,
                                       resume=resume and r == running, extra=extra(r))
        finally:
            torch.set_num_threads(saved)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context(mp_context)
        with ProcessPoolExecutor(max_workers=min(processes, len(todo)), mp_context=ctx) as pool:
            futures = {pool.submit(_run_one, *job(r)): r for r in todo}
            for future in as_completed(futures):
                r = futures[future]
                finished[r] = future.result()
                if checkpoint_dir is not None:
                    save_checkpoint(checkpoint_dir, {**finished[r]["state"], **extra(r)})
    records = [RestartRecord(**finished[r]["record"]) for r in range(num_restarts)]
    scores = [r.elbo if math.isfinite(r.elbo) else -math.inf for r in records]
    best_index = max(range(len(records)), key=lambda i: scores[i])
    best = finished[best_index]
    result = restored_result(build(records[best_index].seed), best["state"])
    result.info.update(best["info"])
    result.info["restarts"] = [r.to_dict() for r in records]
    result.info["best_restart"] = best_index
    if checkpoint_dir is not None:
        save_checkpoint(checkpoint_dir, {**best["state"], **extra(num_restarts)})
    return RestartReport(result, best_index, records, best_state=best["state"])


__all__ = ["RestartRecord", "RestartReport", "run_restarts"]

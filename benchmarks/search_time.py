"""Whole-search time: the default ``bnas-pyro search`` against the DARTS baseline, same space and epochs.

- ``bnas``: the search stage of ``bnas-pyro search`` with the default configuration (what
  ``make demo`` runs: digits, the MLP cell, evidence mode, the structured guide: an exact sum
  over the cell's 48 structures every step, ``joint``), i.e. ``drive(build_parts(config))``
  with its progress callback and checkpoints, without the analysis and retraining stages;
- ``darts``: :class:`bnas_pyro.search.darts.DartsSearch` (first-order DARTS: a weight step on a
  training batch and an alpha step on a validation batch per training batch) on the same data,
  space, epochs and batch size.

The search loop alone (``BilevelSearch.run`` without the progress callback, which evaluates the
ELBO and a 4-draw posterior-predictive validation accuracy every ``eval_every`` outer steps, and
without checkpoints) is timed too.
All run ``--repeats`` times (default 5: on a shared machine single repeats spread by 30% and
more), alternating; prints the median wall and process-CPU times, the
ratio bnas/darts (target <= 1.5: the median over the repeats of each repeat's ratio, each
repeat's shown too, as the spread on a shared machine) and whether the default search takes
under 30 s (the ``make demo`` target).  ``--epochs`` shortens both alike (default: the configuration's 150).
One untimed one-epoch run of each comes first, so that a process's one-time costs (imports,
reading the data set) fall on none of the timed runs.

    python benchmarks/search_time.py
    python benchmarks/search_time.py --device cuda
    python benchmarks/search_time.py --epochs 20 --repeats 1     # a quick check
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from timing import resolve_device

from bnas_pyro.app.builders import build_parts
from bnas_pyro.app.config import default_config
from bnas_pyro.app.drivers import drive, make_search
from bnas_pyro.search.darts import DartsSearch

TARGET_RATIO, DEMO_SECONDS = 1.5, 30.0


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    device = resolve_device(args.device)
    if device is None:
        return
    torch.set_num_threads(args.threads)
    overrides = {"device": str(device)}
    if args.epochs is not None:
        overrides["search.epochs"] = args.epochs
    config = default_config().replace(**overrides)
    s = config.search

    def bnas(config=config):
        parts = build_parts(config)
        with tempfile.TemporaryDirectory() as directory:
            drive(parts, directory, False)

    def bnas_loop(config=config):   # the same search without the monitoring and checkpoints
        parts = build_parts(config)
        data = parts.data
        make_search(config, parts.model, parts.guide, parts.mode, parts.strategy, parts.inner_steps,
                    parts.outer_steps, None, False, []).run(data.x_train, data.y_train,
                                                             data.x_val, data.y_val)

    def darts(config=config):
        parts = build_parts(config)
        data = parts.data
        DartsSearch(parts.space, data.task, epochs=config.search.epochs,
                    batch_size=config.search.batch_size,
                    seed=config.seed).run(data.x_train, data.y_train, data.x_val, data.y_val)

    # the first run in a process pays one-time costs that are not search costs (about 1 s: the
    # first torch optimiser imports torch._dynamo, the data set is read and cached, Pyro's and
    # torch.save's modules load), which would fall on whichever search runs first: one
    # one-epoch run of each, untimed
    warm = config.replace(**{"search.epochs": 1})
    for fn in (bnas, bnas_loop, darts):
        fn(warm)
    runs = {"bnas": [], "bnas_loop": [], "darts": []}
    for _ in range(args.repeats):
        for name, fn in (("bnas", bnas), ("bnas_loop", bnas_loop), ("darts", darts)):
            runs[name].append(timed(fn))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    print(f"default search (digits, mlp_cell, evidence, {s.guide} guide), {s.epochs} epochs, batch "
          f"{s.batch_size}, device {device}, {args.threads} thread(s), {args.repeats} repeats")
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
           for k, v in runs.items()}
    labels = {"bnas": "bnas-pyro search (drive: with its progress callback, checkpoints)",
              "bnas_loop": "bnas search loop only (BilevelSearch.run, no callback)",
              "darts": "DartsSearch"}
    for name, (wall, cpu) in med.items():
        print(f"{labels[name]:>64}: wall {wall:7.2f} s   cpu {cpu:7.2f} s")
    for name in ("bnas", "bnas_loop"):
        pairs = [a[0] / b[0] for a, b in zip(runs[name], runs["darts"])]
        wall_ratio = statistics.median(pairs)
        cpu_ratio = statistics.median(a[1] / b[1] for a, b in zip(runs[name], runs["darts"]))
        print(f"ratio {name}/darts: wall {wall_ratio:.2f}, cpu {cpu_ratio:.2f} "
              f"(target <= {TARGET_RATIO}): {'OK' if wall_ratio <= TARGET_RATIO else 'ABOVE TARGET'}"
              f"   per repeat: {' '.join(f'{r:.2f}' for r in pairs)}")
    full = s.epochs == default_config().search.epochs
    verdict = ("OK" if med["bnas"][0] < DEMO_SECONDS else "ABOVE TARGET") if full else \
        "n/a (shortened)"
    print(f"default search time: {med['bnas'][0]:.2f} s wall (make demo target < {DEMO_SECONDS:.0f} s): "
          f"{verdict}")


if __name__ == "__main__":
    main()

"""Fashion-MNIST at full size: the MLP-cell search on the 60,000 training images against DARTS.

Both methods search the same space (the MLP cell on 784-vectors) for the same number of epochs
on the same split (the official 10,000 test images; 7,000 of the 60,000 training images for
validation, the rest, 53,000, for training), and the structure each finds is retrained from
scratch the same way (Adam, cosine decay, train + validation; ``--retrain-init posterior_mean``
starts bnas's from E_q[W | s] instead) and scored on the test images:

- **bnas (evidence)**: ``bnas-pyro search`` with ``data.name=fashion_mnist`` (the default
  structured guide: a discrete q(s) over the cell's structures with q(W | s); precisions and
  structure logits by the ELBO, :func:`bnas_pyro.app.runner.run_search`);
- **DARTS (1st order)**: :class:`bnas_pyro.search.darts.DartsSearch` on the same supernet with
  point weights (no priors), alpha on validation batches, the structure by DARTS's own rule (the
  strongest non-zero operation per edge).

The warnings column names what went wrong with a structure (``disconnected``: no path of
non-zero operations from the input to the output, chance-level predictions) for either method.

The analysis is sized for the data: each draw of q costs a pass over the rows it is evaluated on,
so the defaults here are 20 draws for the test predictive (10,000 rows), 100 draws of q on 2,000
training rows for the ELBO, ArviZ, PSIS-LOO and the ranking's evidence (``--predictive-draws``,
``--draws``, ``--analysis-rows``; the run configuration's defaults are 100, 200 and 5,000), and
the top 3 structures ranked after 100 refit steps each, with 100 evidence draws (``--rank-k``,
``--rank-refit-steps``, ``--rank-draws``; defaults 5, 300, 200).

Each method runs in its own process, so the peak resident memory printed is its own.  Wall time
is printed per phase: search, analysis (bnas only: posterior predictive, ELBO, C_param / C_struct,
ArviZ InferenceData and PSIS-LOO), retrain.

The data are read from the IDX files in ``--data-path`` or /usr/share/datasets/fashion-mnist
(the Debian / Ubuntu package ``dataset-fashion-mnist``); nothing is downloaded.

    python examples/fashion_mnist.py                         # 5 search, 10 retrain epochs
    python examples/fashion_mnist.py --search-epochs 1 --retrain-epochs 1   # a smoke run
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import resource
import sys
import tempfile
import time
from typing import Any

VAL_FRACTION = 7000 / 60000


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def _config(args: argparse.Namespace):
    from bnas_pyro.app.config import default_config

    changes: dict[str, Any] = {
        "data.name": "fashion_mnist", "data.val_fraction": VAL_FRACTION, "data.seed": 0,
        "seed": args.seed, "threads": args.threads, "search.epochs": args.search_epochs,
        "retrain.epochs": args.retrain_epochs, "analysis.plots": False,
        "analysis.max_rows": args.analysis_rows, "analysis.draws": args.draws,
        "analysis.predictive_draws": args.predictive_draws, "analysis.rank_k": args.rank_k,
        "analysis.rank_refit_steps": args.rank_refit_steps, "analysis.rank_draws": args.rank_draws,
        "retrain.init": args.retrain_init}
    if args.data_path:
        changes["data.path"] = args.data_path
    return default_config().replace(**changes)


def run_bnas(args: argparse.Namespace) -> dict[str, Any]:
    from bnas_pyro.app.runner import run_search

    config = _config(args)
    with tempfile.TemporaryDirectory() as out:
        outcome = run_search(config, run_dir=out, progress=args.progress)
    m = outcome.summary["analysis"]["metrics"]
    sizes = outcome.summary["analysis"]["data"]["sizes"]
    return {"method": "bnas (evidence)", "sizes": sizes, "structure": outcome.summary["structure"],
            "search": outcome.timings["search"], "analysis": outcome.timings["analysis"],
            "retrain": outcome.timings["retrain"], "accuracy": m["test_accuracy"],
            "supernet_accuracy": m["supernet_test_accuracy"], "peak_mb": _peak_rss_mb(),
            "warnings": [w["code"] for w in outcome.summary["warnings"]]}


def run_darts(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from bnas_pyro.analysis.diagnostics import structure_warnings
    from bnas_pyro.analysis.metrics import evaluate_network
    from bnas_pyro.app.builders import build_data, build_search_space
    from bnas_pyro.search.darts import DartsSearch
    from bnas_pyro.training import discrete_network, train_network

    config = _config(args)
    torch.set_num_threads(args.threads)
    torch.manual_seed(config.seed)
    data = build_data(config)
    space = build_search_space(config, data)
    s, r = config.search, config.retrain
    t0 = time.perf_counter()
    found = DartsSearch(space, data.task, epochs=s.epochs, batch_size=s.batch_size,
                        seed=config.seed, progress=args.progress).run(
        data.x_train, data.y_train, data.x_val, data.y_val)
    t1 = time.perf_counter()
    net = discrete_network(space, found.structure, torch.Generator().manual_seed(config.seed))
    x = torch.cat([data.x_train, data.x_val])
    y = torch.cat([data.y_train, data.y_val])
    train_network(net, x, y, data.task, epochs=r.epochs, batch_size=r.batch_size, lr=r.lr,
                  weight_decay=r.weight_decay, seed=config.seed, progress=args.progress)
    test = evaluate_network(net, data.x_test, data.y_test, data.task)
    t2 = time.perf_counter()
    return {"method": "DARTS (1st order)", "structure": found.structure, "search": t1 - t0,
            "analysis": 0.0, "retrain": t2 - t1, "accuracy": test["accuracy"],
            "supernet_accuracy": None, "peak_mb": _peak_rss_mb(),
            "warnings": [w["code"] for w in structure_warnings(
                space, found.structure, cause="the derivation chose zero on every path")]}


def _in_own_process(fn, args):
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, args).result()


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--search-epochs", type=int, default=5)
    p.add_argument("--retrain-epochs", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--analysis-rows", type=int, default=2000,
                   help="training rows of the ELBO estimate, InferenceData and PSIS-LOO "
                        "(analysis.max_rows; default 2000)")
    p.add_argument("--draws", type=int, default=100, help="draws of q for ArviZ (default 100)")
    p.add_argument("--predictive-draws", type=int, default=20,
                   help="draws of q for the supernet's test predictive (default 20)")
    p.add_argument("--rank-k", type=int, default=3,
                   help="structures ranked by refitted evidence (analysis.rank_k; default 3)")
    p.add_argument("--rank-refit-steps", type=int, default=100,
                   help="refit steps of q(W | s) per ranked structure, started from the search's "
                        "(analysis.rank_refit_steps; default 100)")
    p.add_argument("--rank-draws", type=int, default=100,
                   help="weight draws of each ranked structure's evidence (default 100)")
    p.add_argument("--retrain-init", default="scratch",
                   choices=["scratch", "posterior_mean", "auto"],
                   help="where bnas's retraining starts (retrain.init; default scratch, as DARTS's "
                        "retraining does)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-path", help="folder of the four IDX files (default: "
                                       "/usr/share/datasets/fashion-mnist)")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    args = p.parse_args(argv)
    from bnas_pyro.data import load_dataset

    try:  # fail early, with the instructions, when the files are absent
        load_dataset("fashion_mnist", path=args.data_path, val_fraction=VAL_FRACTION)
    except FileNotFoundError as err:
        print(f"fashion_mnist.py: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    rows = [_in_own_process(run_bnas, args), _in_own_process(run_darts, args)]
    print(f"Fashion-MNIST, MLP cell, {args.search_epochs} search epochs, {args.retrain_epochs} "
          f"retrain epochs, {args.threads} threads; train/val/test = "
          f"{rows[0]['sizes']['train']}/{rows[0]['sizes']['val']}/{rows[0]['sizes']['test']}")
    print()
    print("| method | search s | analysis s | retrain s | total s | peak RSS MB | test accuracy "
          "| supernet test accuracy | warnings |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        total = row["search"] + row["analysis"] + row["retrain"]
        sup = "" if row["supernet_accuracy"] is None else f"{row['supernet_accuracy']:.4f}"
        print(f"| {row['method']} | {row['search']:.1f} | {row['analysis']:.1f} | "
              f"{row['retrain']:.1f} | {total:.1f} | {row['peak_mb']:.0f} | "
              f"{row['accuracy']:.4f} | {sup} | {', '.join(row['warnings']) or '-'} |")
    bnas, darts = rows
    print()
    print("structures:")
    for row in rows:
        print(f"  {row['method']}: " + ", ".join(f"{k}:{v}" for k, v in row["structure"].items()))
    print()
    print("targets: bnas accuracy >= 0.895; bnas >= DARTS - 0.005; search time <= 2x DARTS; "
          "analysis <= search / 2; peak memory <= 1500 MB")
    print(f"measured: accuracy {bnas['accuracy']:.4f}; bnas - DARTS = "
          f"{bnas['accuracy'] - darts['accuracy']:+.4f}; search ratio "
          f"{bnas['search'] / darts['search']:.2f}; analysis / search "
          f"{bnas['analysis'] / bnas['search']:.2f}; peak {bnas['peak_mb']:.0f} MB")
    return rows


if __name__ == "__main__":
    main()

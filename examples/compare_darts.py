"""Bayesian structure search against a plain DARTS-style relaxation: same space, same budget, 5 seeds.

For each space (the MLP cell on digits as 64-vectors, the convolutional cell on digits as 1x8x8
images) and each seed:

- **bnas (evidence)**: the default search of ``bnas-pyro search`` (mean-field q(W, Gamma), weight
  precisions A and structure logits m fitted jointly by the ELBO, ``joint`` hypergradient);
- **DARTS (1st order)**: :class:`bnas_pyro.search.darts.DartsSearch`, the same supernet with point
  weights and softmax(alpha) mixing, alpha updated on validation batches, no priors;

both for the same number of epochs over the training split.  Each found structure (argmax per
edge, zero/none included for both; DARTS is also shown with its own rule, which never picks
none) is then trained from scratch the same way (Adam, cosine decay,
train + validation) and scored on the same test split: accuracy, NLL and ECE.  The table also
shows how many distinct structures the seeds found, how often a search collapsed (every edge
that offers skip/zero chose it), how often the found network had no path from input to output
(all zero: chance accuracy), and the mean fraction of skip/zero choices on the edges offering them.

    python examples/compare_darts.py                       # default budget (about 10 minutes)
    python examples/compare_darts.py --mlp-epochs 300 --conv-epochs 60 --retrain-epochs 100
    python examples/compare_darts.py --quick               # a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from bnas_pyro.analysis.collapse import collapse_statistics
from bnas_pyro.analysis.metrics import evaluate_network
from bnas_pyro.app.builders import (
    build_data,
    build_guide,
    build_model,
    build_search_space,
    make_schedule,
    outer_and_inner_steps,
    search_strategy,
)
from bnas_pyro.app.config import default_config
from bnas_pyro.search.bilevel import BilevelSearch
from bnas_pyro.search.darts import DartsSearch
from bnas_pyro.training import discrete_network, residual_std, train_network

SPACES = {
    "mlp": {"data.name": "digits", "space.name": "mlp_cell"},
    "conv": {"data.name": "digits_images", "space.name": "conv_cell", "space.options": {}},
}


def bayes_search(config) -> tuple[list[dict[str, str]], float]:
    data = build_data(config)
    space = build_search_space(config, data)
    model = build_model(config, space, data)
    guide = build_guide(config, model, data)
    outer, inner = outer_and_inner_steps(config, data)
    s = config.search
    schedule = make_schedule(config)
    search = BilevelSearch(model, guide, schedule, search_strategy(config, schedule), inner_steps=inner,
                           outer_steps=outer, lr=s.lr, hyper_lr=s.hyper_lr, batch_size=s.batch_size,
                           num_particles=s.num_particles, seed=config.seed, progress=False)
    t = time.perf_counter()
    result = search.run(data.x_train, data.y_train)
    return [result.structure], time.perf_counter() - t


def darts_search(config) -> tuple[list[dict[str, str]], float]:
    """One DARTS search, derived twice: argmax over all ops (our rule for q) and DARTS's own
    rule (the strongest non-zero op per edge, :class:`DartsSearch`'s default)."""
    data = build_data(config)
    space = build_search_space(config, data)
    s = config.search
    res = DartsSearch(space, data.task, epochs=s.epochs, batch_size=s.batch_size,
                      seed=config.seed).run(data.x_train, data.y_train, data.x_val, data.y_val)
    return [res.argmax_structure, res.structure], res.wall_time


def evaluate(config, structure: dict[str, str], seed: int, epochs: int) -> dict[str, float]:
    """Train the structure from scratch on train + validation; test accuracy, NLL, ECE."""
    data = build_data(config)
    space = build_search_space(config, data)
    net = discrete_network(space, structure, torch.Generator().manual_seed(seed))
    x = torch.cat([data.x_train, data.x_val])
    y = torch.cat([data.y_train, data.y_val])
    r = config.retrain
    train_network(net, x, y, data.task, epochs=epochs, batch_size=r.batch_size, lr=r.lr,
                  weight_decay=r.weight_decay, seed=seed)
    noise = residual_std(net, x, y) if data.task == "regression" else None
    return evaluate_network(net, data.x_test, data.y_test, data.task, noise_std=noise, y_std=data.y_std)


def _ms(values: list[float], digits: int = 3) -> str:
    m = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--spaces", nargs="+", choices=sorted(SPACES), default=["mlp", "conv"])
    p.add_argument("--mlp-epochs", type=int, default=150, help="search epochs, MLP space (default 150)")
    p.add_argument("--conv-epochs", type=int, default=20, help="search epochs, conv space (default 20)")
    p.add_argument("--retrain-epochs", type=int, default=60)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="2 seeds, 3 epochs: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.mlp_epochs, args.conv_epochs, args.retrain_epochs = 2, 3, 2, 5
    torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    for name in args.spaces:
        epochs = args.mlp_epochs if name == "mlp" else args.conv_epochs
        for methods, search in ((["bnas (evidence)"], bayes_search),
                                (["DARTS (1st order)", "DARTS, none excluded"], darts_search)):
            per_seed: list[list[dict[str, Any]]] = [[] for _ in methods]
            for seed in range(args.seeds):
                # the data split is fixed (seed 0); the search and the retraining use `seed`
                config = default_config().replace(**SPACES[name], **{"search.epochs": epochs,
                                                                      "data.seed": 0, "seed": seed})
                structures, wall = search(config)
                space = build_search_space(config, build_data(config))
                for i, (method, structure) in enumerate(zip(methods, structures)):
                    metrics = evaluate(config, structure, seed, args.retrain_epochs)
                    col = collapse_statistics(space, structure)
                    per_seed[i].append({"structure": structure, "wall": wall, **metrics, **col})
                    print(f"{name:4s} {method:20s} seed {seed}: acc {metrics['accuracy']:.4f} "
                          f"({wall:.1f} s) {structure}", flush=True)
            for method, runs in zip(methods, per_seed):
                rows.append({"space": name, "method": method, "epochs": epochs, "runs": runs})
    print()
    print(f"digits, same space and budget per row pair, {args.seeds} seeds; derived structures "
          f"retrained from scratch for {args.retrain_epochs} epochs on train+val; test split of 359")
    print()
    print("| space | method | search epochs | test accuracy | test NLL | test ECE | distinct structures "
          "| collapsed | no input->output path | skip/zero fraction | search s/seed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        runs = r["runs"]
        distinct = len({tuple(sorted(x["structure"].items())) for x in runs})
        collapsed = sum(x["collapsed"] for x in runs)
        dead = sum(x["disconnected"] for x in runs)
        print(f"| {r['space']} | {r['method']} | {r['epochs']} | {_ms([x['accuracy'] for x in runs], 4)} "
              f"| {_ms([x['nll'] for x in runs])} | {_ms([x['ece'] for x in runs])} "
              f"| {distinct} of {len(runs)} | {collapsed} of {len(runs)} | {dead} of {len(runs)} "
              f"| {statistics.fmean(x['skip_zero_fraction'] for x in runs):.2f} "
              f"| {statistics.fmean(x['wall'] for x in runs):.1f} |")
    return rows


if __name__ == "__main__":
    main()

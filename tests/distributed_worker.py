"""One rank of the data-parallel tests (run as a script by ``tests/test_distributed.py``, with
``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` set as ``torchrun`` sets them), and
the searches the tests compare, built the same way in one process.

    python tests/distributed_worker.py all OUT DIR    step, 20 steps, a search, restarts, resume
    python tests/distributed_worker.py long OUT.pt    a search that runs until it is killed
"""

from __future__ import annotations

import functools
import sys

import torch

from bnas_pyro import BilevelSearch, Coefficients, SearchSpace, estimate_elbo, run_restarts
from bnas_pyro.guides import MeanFieldGuide, StructuredGuide
from bnas_pyro.models import BayesianSupernet, NormalLikelihood

TIMEOUT = 30.0  # seconds a collective waits for a peer in the tests


def cubic_data(n: int = 48):
    """y = x^3 - x + noise: the polynomial degree is the structure to find."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, generator=g, dtype=torch.float64) * 4 - 2
    y = (x**3 - x).squeeze(-1) + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y


def build(seed: int = 0, parallel=None, outer_steps: int = 20, inner_steps: int = 10,
          batch_size: int | None = 16, hypergradient_override: str = "joint",
          structured: bool = False, **options) -> BilevelSearch:
    """A search over the degree (0..3) of a polynomial, in float64, minibatched
    (``structured``: with StructuredGuide, its q(s) moved by all-reduced natural-gradient steps
    from the first step on)."""
    space = SearchSpace({"x": 1, "y": 1}, [("x", "y", [{"name": "poly", "degree": d}
                                                       for d in range(4)])])
    model = BayesianSupernet(space, likelihood=NormalLikelihood(precision=4.0)).double()
    if structured:
        guide = StructuredGuide(model, init_scale=0.05, structure_warmup=0, structure_lr=0.1,
                                generator=torch.Generator().manual_seed(seed)).double()
    else:
        guide = MeanFieldGuide(model, init_scale=0.05,
                               generator=torch.Generator().manual_seed(seed)).double()
    return BilevelSearch(model, guide, Coefficients(c_temp=0.5), hypergradient_override,
                         inner_steps=inner_steps,
                         outer_steps=outer_steps, lr=0.02, hyper_lr=0.02, batch_size=batch_size,
                         seed=seed, progress=False, parallel=parallel, **options)


def state(search: BilevelSearch) -> dict[str, torch.Tensor]:
    """Every parameter of the search: theta (guide) and h (hyperparameters)."""
    out = {f"guide.{k}": v.detach().clone() for k, v in search.guide.state_dict().items()}
    out.update({f"hyper.{k}": v.detach().clone() for k, v in search.model.hyper.state_dict().items()})
    return out


def one_step(parallel=None) -> dict[str, torch.Tensor]:
    search = build(outer_steps=1, inner_steps=1, parallel=parallel)
    x, y = cubic_data()
    search.run(x, y)
    return state(search)


def twenty_steps(parallel=None, structured: bool = False) -> dict[str, torch.Tensor]:
    search = build(outer_steps=4, inner_steps=5, parallel=parallel, structured=structured)
    x, y = cubic_data()
    search.run(x, y)
    return state(search)


def inner_loop(parallel=None) -> dict:
    """Ten steps of the inner loop (T^eta, ``run_inner_steps``) at fixed h, and the last L."""
    search = build(parallel=parallel)
    x, y = cubic_data()
    search.prepare(x, y)
    L = search.run_inner_steps(10)
    return {"state": state(search), "L": L}


def search_outcome(parallel=None, checkpoint_dir=None, resume: bool = False,
                   outer_steps: int = 20) -> dict:
    """A 200-step search; its structure, final ELBO (seeded estimate on all the data) and state."""
    steps_run = []
    search = build(outer_steps=outer_steps, parallel=parallel, checkpoint_dir=checkpoint_dir,
                   checkpoint_every=5, callbacks=[lambda search, record: steps_run.append(record.step)])
    x, y = cubic_data()
    result = search.run(x, y, resume=resume)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(123)
        elbo, _ = estimate_elbo(search.model, search.guide, x, y, num_particles=200)
    return {"structure": dict(result.structure), "elbo": elbo, "state": state(search),
            "final_L": result.final_L, "steps_run": steps_run}


def restart_build(seed: int) -> BilevelSearch:
    return build(seed, outer_steps=6)


def restarts(parallel=None):
    x, y = cubic_data()
    return run_restarts(restart_build, x, y, num_restarts=3, seed=10, elbo_particles=50,
                        parallel=parallel)


def main(argv: list[str]) -> int:
    from bnas_pyro.distributed import init_from_environment

    torch.set_num_threads(1)
    scenario, out = argv[1], argv[2]
    parallel = init_from_environment(timeout=TIMEOUT)
    if scenario == "all":
        report = restarts(parallel)
        from bnas_pyro.search.data_parallel import ShardedSampler

        x, y = cubic_data()
        first_shard = next(ShardedSampler(x, y, 16, torch.Generator().manual_seed(0), parallel))[0]
        results = {
            "rank": parallel.rank, "first_shard": first_shard, "one_step": one_step(parallel),
            "twenty_steps": twenty_steps(parallel), "inner_loop": inner_loop(parallel), "search": search_outcome(parallel),
            "structured": twenty_steps(parallel, structured=True),
            "restarts": None if report is None else {
                "records": [r.to_dict() for r in report.records], "best_index": report.best_index,
                "best_state": state_of(report)},
        }
        # resume: a search stopped after 10 of 20 outer steps (its checkpoint at step 10, in
        # rank 0's folder only), then the full search resumed from it
        checkpoint_dir = f"{argv[3]}/rank{parallel.rank}"
        search_outcome(parallel, checkpoint_dir, outer_steps=10)
        results["resumed"] = search_outcome(parallel, checkpoint_dir, resume=True)
        torch.save(results, f"{out}.{parallel.rank}")
    elif scenario == "long":
        def ready(search, record):
            if record.step == 1:
                print(f"READY {parallel.rank}", flush=True)
        search = build(outer_steps=10**6, parallel=parallel, callbacks=[ready])
        x, y = cubic_data()
        search.run(x, y)
    parallel.close()
    return 0


def state_of(report) -> dict[str, torch.Tensor]:
    best = report.best
    out = {f"guide.{k}": v.detach().clone() for k, v in best.guide.state_dict().items()}
    out.update({f"hyper.{k}": v.detach().clone() for k, v in best.model.hyper.state_dict().items()})
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv))

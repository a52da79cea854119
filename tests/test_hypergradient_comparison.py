"""The Annals of OR comparison (METHOD.md section 6), reduced; the full table is ``slow``.

Pass criteria: in every seed each gradient method's best Q (the ELBO) beats random
search's, and the gradient methods' mean test RMSE is below random search's.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest
import torch

from bnas_pyro import estimate_elbo

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))

import hypergradient_comparison as hc  # noqa: E402


def test_exact_elbo_agrees_with_monte_carlo():
    problem = hc.make_problem(0)
    model, guide = hc.build(problem)
    exact = hc.exact_elbo(model, guide, problem.x, problem.y)
    mc, se = estimate_elbo(model, guide, problem.x, problem.y, num_particles=400)
    assert abs(exact - mc) < 4 * se + 1e-6, (exact, mc, se)


def test_reduced_comparison_gradient_methods_beat_random_search():
    torch.set_num_threads(1)
    methods = ["random", "greedy", "drmad", "hoag"]
    results = hc.compare(seeds=2, outer_steps=15, inner_steps=20, methods=methods)
    print("\n" + hc.table(results))
    assert hc.check(results) == []
    # the check is not vacuous: random search's best Q is well below every gradient method's
    random_q = statistics.mean(r["best_Q"] for r in results["random"])
    for m in methods[1:]:
        assert statistics.mean(r["best_Q"] for r in results[m]) > random_q + 10


@pytest.mark.slow
def test_full_comparison_table():
    torch.set_num_threads(1)
    results = hc.compare(seeds=5, outer_steps=50, inner_steps=50, methods=hc.METHODS)
    print("\n" + hc.table(results))
    assert hc.check(results) == []

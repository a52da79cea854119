"""The thesis's architecture experiment (METHOD.md section 6; examples/thesis_tanh.py).

f_0 = w_0, f_1 = tanh(w_1[0] x[0] + w_1[1]) (the true form), f_2 = tanh(w_2^T x) (over-complex);
plain prior, mean-field guide, Adam, 1000 iterations.  Five seeds, each with new data and a new
initialisation, for the full claims (slow); one or two seeds in ``make test``.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import thesis_tanh as example  # noqa: E402

EVIDENCE = example.SETTINGS["(1, 1, 1)"]
STRONG_KL = example.SETTINGS["(0.01, 1, 100)"]
WEAK_KL = example.SETTINGS["(100, 1, 0.01)"]


def _most_probable(result) -> str:
    return example.summary(result)["most_probable"]


def _f1_probability(result) -> float:
    return example.summary(result)["argmax_probability"][1]


def _f2_weight(coefficients, c_temp, seed) -> float:
    return example.summary(example.run(coefficients, c_temp, seed))["mean_gamma"][2]


def test_thesis_reduced(tmp_path):
    torch.set_num_threads(1)
    # all coefficients 1, c_temp = 0.2: f_1
    assert _most_probable(example.run(EVIDENCE, 0.2, 0)) == "f_1"
    # the over-complex f_2 weighs more under q with a weak KL than with a strong one
    assert _f2_weight(WEAK_KL, 0.2, 0) > _f2_weight(STRONG_KL, 0.2, 0) + 0.2
    # c_comb = -1 pushes the prior away from f_0 and f_2: f_1, more probable than without it
    comb = example.run(STRONG_KL, 1.0, 0, comb=True)
    assert _most_probable(comb) == "f_1"
    assert _f1_probability(comb) > _f1_probability(example.run(STRONG_KL, 1.0, 0)) + 0.1


def test_simplex_figure_is_written(tmp_path):
    results = {(n, t): example.run(c, t, 0, steps=20) for n, c in example.SETTINGS.items()
               for t in example.TEMPERATURES}
    example.plot_simplex_grid(results, tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 10_000
    pts = example.to_plane(torch.eye(3))
    assert torch.allclose(pts, example._CORNERS)


@pytest.mark.slow
def test_thesis_reproduction():
    """`make reproduce`: the three claims over five seeds."""
    torch.set_num_threads(1)
    seeds = range(5)
    evidence = [_most_probable(example.run(EVIDENCE, 0.2, s)) for s in seeds]
    print("all coefficients 1, c_temp 0.2, most probable:", evidence)
    assert evidence.count("f_1") >= 4

    pairs = {t: [(_f2_weight(WEAK_KL, t, s), _f2_weight(STRONG_KL, t, s)) for s in seeds]
             for t in example.TEMPERATURES}
    for t, values in pairs.items():
        print(f"c_temp {t}: E_q[gamma_2] (100, 1, 0.01) vs (0.01, 1, 100):",
              [(round(a, 3), round(b, 3)) for a, b in values],
              f"larger in {sum(a > b for a, b in values)}/5")
    assert all(a > b for a, b in pairs[0.2])
    assert sum(a > b for v in pairs.values() for a, b in v) >= 13          # of 15
    mean = lambda i: sum(v[i] for vs in pairs.values() for v in vs) / 15  # noqa: E731
    assert mean(0) > mean(1) + 0.15

    comb = [example.run(STRONG_KL, 1.0, s, comb=True) for s in seeds]
    plain = [example.run(STRONG_KL, 1.0, s) for s in seeds]
    print("c_comb = -1: most probable", [_most_probable(r) for r in comb],
          "q(f_1)", [round(_f1_probability(r), 3) for r in comb],
          "; without c_comb: q(f_1)", [round(_f1_probability(r), 3) for r in plain])
    assert [_most_probable(r) for r in comb].count("f_1") >= 4
    assert all(_f1_probability(a) > _f1_probability(b) for a, b in zip(comb, plain))

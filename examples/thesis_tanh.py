"""The thesis's architecture experiment (METHOD.md section 6): three primitives on one edge.

Data: m = 50, x in R^12: x[0..10] ~ N(0, 1) and the constant feature x[11] = 1;
y = tanh(x[0]) + 0.5 eps, eps ~ N(0, 1) (noise precision 4, known).  One edge x -> y with

    f_0 = w_0                              ("constant")
    f_1 = tanh(w_1[0] x[0] + w_1[1])       ("tanh_subset", features [0]; the true form)
    f_2 = tanh(w_2^T x)                    ("tanh" without bias: the constant feature is in x;
                                             over-complex: 12 weights)

mixed by gamma ~ Concrete on the 3-simplex.  Plain prior N(0, A^{-1}) with one precision per
primitive (METHOD.md section 2: the structure-scaled prior is ill-posed with this guide), a
mean-field guide, Adam, 1000 iterations (10 inner steps x 100 outer steps).

The grid: (c_train, c_prior, c_reg) in {(0.01, 1, 100), (1, 1, 1), (100, 1, 0.01)} times
c_temp in {0.2, 1, 10}.  (1, 1, 1) is evidence maximisation, solved exactly by the ``joint``
strategy (METHOD.md section 4, the theorem); the other two are bilevel and use ``greedy``.
The c_comb run: c_comb = -1 and P = {GS(0.1, [0.99, 0.05, 0.05]), GS(0.1, [0.05, 0.05, 0.99])}
(pushed away from f_0 and f_2) at (0.01, 1, 100) and c_temp = 1.

Run:  .venv/bin/python examples/thesis_tanh.py [--out DIR] [--steps 1000] [--seed 0]
It prints E_q[gamma] and q(argmax gamma) of every run and saves ``thesis_simplex.png`` (3 x 3
histograms of samples of q(Gamma) on the simplex, as in the thesis), ``thesis_curves.png`` (the
fitted E_q f(x) against x[0]) and ``thesis_comb.png`` (the c_comb run).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bnas_pyro import BilevelSearch, Coefficients, SearchSpace, StructureDistribution
from bnas_pyro.analysis.result import SearchResult
from bnas_pyro.guides import MeanFieldGuide
from bnas_pyro.models import BayesianSupernet, NormalLikelihood, structure_site
from bnas_pyro.models.weight_priors import WEIGHT_SITE

NUM_FEATURES = 11          # x[0..10] ~ N(0, 1); x[11] = 1
NOISE_STD = 0.5
PRIMITIVES = ["constant", {"name": "tanh_subset", "features": [0]}, {"name": "tanh", "bias": False}]
NAMES = ["f_0", "f_1", "f_2"]
SETTINGS: dict[str, tuple[float, float, float]] = {   # (c_train, c_prior, c_reg)
    "(0.01, 1, 100)": (0.01, 1.0, 100.0),
    "(1, 1, 1)": (1.0, 1.0, 1.0),
    "(100, 1, 0.01)": (100.0, 1.0, 0.01),
}
TEMPERATURES = (0.2, 1.0, 10.0)
COMB_TARGETS = ([0.99, 0.05, 0.05], [0.05, 0.05, 0.99])
EDGE = "x->y"


def make_data(seed: int, m: int = 50) -> tuple[Tensor, Tensor]:
    """x (m, 12) with the constant last column, y = tanh(x[0]) + 0.5 eps."""
    g = torch.Generator().manual_seed(10_000 + seed)
    x = torch.cat([torch.randn(m, NUM_FEATURES, generator=g), torch.ones(m, 1)], dim=1)
    y = torch.tanh(x[:, 0]) + NOISE_STD * torch.randn(m, generator=g)
    return x, y


def make_space() -> SearchSpace:
    return SearchSpace({"x": NUM_FEATURES + 1, "y": 1}, [("x", "y", PRIMITIVES)])


def run(coefficients: tuple[float, float, float], c_temp: float, seed: int, *, steps: int = 1000,
        comb: bool = False, c_comb: float = -1.0, data: tuple[Tensor, Tensor] | None = None,
        hypergradient: str | None = None, lr: float = 0.02, hyper_lr: float = 0.02,
        progress: bool = False) -> SearchResult:
    """One search: seed ``seed`` draws the data (unless given) and the initialisation."""
    c_train, c_prior, c_reg = coefficients
    x, y = data if data is not None else make_data(seed)
    torch.manual_seed(seed)
    space = make_space()
    model = BayesianSupernet(space, likelihood=NormalLikelihood(precision=1.0 / NOISE_STD**2))
    guide = MeanFieldGuide(model, init_scale=0.05, generator=torch.Generator().manual_seed(seed))
    c = Coefficients(c_train=c_train, c_prior=c_prior, c_reg=c_reg, c_temp=c_temp,
                     c_comb=c_comb if comb else 0.0)
    targets = ([StructureDistribution({EDGE: p}, temperature=0.1) for p in COMB_TARGETS]
               if comb else [])
    if hypergradient is None:
        hypergradient = "joint" if c.is_evidence else "greedy"
    search = BilevelSearch(model, guide, c, hypergradient, inner_steps=10,
                           outer_steps=max(steps // 10, 1), lr=lr, hyper_lr=hyper_lr,
                           comb_targets=targets, seed=seed, progress=progress)
    return search.run(x, y)


def gamma_samples(result: SearchResult, num_samples: int = 3000) -> Tensor:
    """Samples of gamma ~ q(Gamma) on the simplex, shape (num_samples, 3)."""
    with torch.no_grad():
        return result.guide.structure.distribution(0).sample((num_samples,)).exp()


def predictive_mean(result: SearchResult, x: Tensor, num_samples: int = 300) -> Tensor:
    """E_q f(x) over (W, Gamma) ~ q."""
    from pyro import poutine

    model, guide = result.model, result.guide
    out = torch.zeros(x.shape[0])
    with torch.no_grad():
        for _ in range(num_samples):
            tr = poutine.trace(guide).get_trace(x)
            gammas = [tr.nodes[structure_site(e.name)]["value"].exp() if len(e) > 1 else None
                      for e in model.space.edges]
            out += model.supernet(x, tr.nodes[WEIGHT_SITE]["value"], gammas).squeeze(-1)
    return out / num_samples


def summary(result: SearchResult) -> dict[str, Any]:
    mean = result.mean_gamma()[EDGE]
    probs = result.edge_probabilities()[EDGE]
    return {"mean_gamma": mean, "argmax_probability": probs,
            "most_probable": NAMES[max(range(3), key=lambda i: probs[i])]}


# ---------------------------------------------------------------------------- figures
_CORNERS = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])


def to_plane(gamma: Tensor) -> Tensor:
    """Barycentric coordinates on the simplex -> points of the triangle f_0, f_1, f_2."""
    return gamma @ _CORNERS


def _simplex_panel(ax, result: SearchResult, title: str) -> None:
    from matplotlib.colors import LogNorm

    pts = to_plane(gamma_samples(result))
    ax.hist2d(pts[:, 0].numpy(), pts[:, 1].numpy(), bins=40,
              range=[[0, 1], [0, math.sqrt(3) / 2]], cmap="viridis", norm=LogNorm(), cmin=1)
    tri = torch.cat([_CORNERS, _CORNERS[:1]])
    ax.plot(tri[:, 0], tri[:, 1], "k-", lw=0.8)
    for k, (cx, cy) in enumerate(_CORNERS.tolist()):
        ax.annotate(NAMES[k], (cx, cy), textcoords="offset points",
                    xytext=((-16, -4), (4, -4), (8, -4))[k], fontsize=8)
    mean = result.mean_gamma()[EDGE]
    ax.set_title(f"{title}\nE_q[gamma] = " + ", ".join(f"{v:.2f}" for v in mean), fontsize=8)
    ax.set_xlim(-0.12, 1.12), ax.set_ylim(-0.05, 0.92)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_aspect("equal")


def plot_simplex_grid(results: dict[tuple[str, float], SearchResult], path: Path) -> None:
    """The 3 x 3 grid of histograms of gamma ~ q(Gamma) on the simplex (log colour scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(SETTINGS), len(TEMPERATURES), figsize=(11, 10))
    for i, name in enumerate(SETTINGS):
        for j, t in enumerate(TEMPERATURES):
            _simplex_panel(axes[i][j], results[(name, t)], f"{name}, c_temp={t:g}")
    fig.suptitle("samples of q(Gamma): rows (c_train, c_prior, c_reg), columns c_temp")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_simplex(result: SearchResult, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    _simplex_panel(ax, result, title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(results: dict[tuple[str, float], SearchResult], data: tuple[Tensor, Tensor],
                path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = data
    order = x[:, 0].argsort()
    fig, axes = plt.subplots(1, len(SETTINGS), figsize=(14, 4), sharey=True)
    for ax, name in zip(axes, SETTINGS):
        ax.scatter(x[:, 0], y, s=10, c="k", label="data")
        grid = torch.linspace(-3, 3, 200)
        ax.plot(grid, torch.tanh(grid), "k--", lw=1, label="tanh(x[0])")
        for t in TEMPERATURES:
            pred = predictive_mean(results[(name, t)], x)
            ax.plot(x[order, 0], pred[order], "o-", lw=0.6, ms=2.5, label=f"c_temp={t:g}")
        ax.set_title(f"(c_train, c_prior, c_reg) = {name}", fontsize=9)
        ax.set_xlabel("x[0]")
    axes[0].set_ylabel("E_q f(x)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".", help="folder for the PNG files")
    parser.add_argument("--steps", type=int, default=1000, help="Adam iterations per run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = make_data(args.seed)
    results: dict[tuple[str, float], SearchResult] = {}
    print(f"{'(c_train, c_prior, c_reg)':>26} {'c_temp':>6}  E_q[gamma] (f_0, f_1, f_2)   "
          f"q(argmax) (f_0, f_1, f_2)   most probable")
    for name, coefficients in SETTINGS.items():
        for t in TEMPERATURES:
            r = run(coefficients, t, args.seed, steps=args.steps, data=data)
            results[(name, t)] = r
            s = summary(r)
            print(f"{name:>26} {t:>6g}  " + " ".join(f"{v:.3f}" for v in s["mean_gamma"])
                  + "        " + " ".join(f"{v:.3f}" for v in s["argmax_probability"])
                  + f"        {s['most_probable']}")
    comb = run(SETTINGS["(0.01, 1, 100)"], 1.0, args.seed, steps=args.steps, data=data, comb=True)
    s = summary(comb)
    print(f"c_comb = -1, P = {{GS(0.1, {list(COMB_TARGETS[0])}), GS(0.1, {list(COMB_TARGETS[1])})}},"
          f" (0.01, 1, 100), c_temp = 1: E_q[gamma] = "
          + ", ".join(f"{v:.3f}" for v in s["mean_gamma"]) + f"; most probable {s['most_probable']}")
    plot_simplex_grid(results, out / "thesis_simplex.png")
    plot_curves(results, data, out / "thesis_curves.png")
    plot_simplex(comb, "c_comb = -1, (0.01, 1, 100), c_temp = 1", out / "thesis_comb.png")
    print(f"saved {out / 'thesis_simplex.png'}, {out / 'thesis_curves.png'}, {out / 'thesis_comb.png'}")


if __name__ == "__main__":
    main()

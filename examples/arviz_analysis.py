"""Reading the posterior over structures with ArviZ.

1. a structure search on the wine data (MLP cell space, evidence mode);
2. ``result.to_inference_data(x=..., y=...)``: InferenceData with groups posterior, prior,
   log_likelihood, observed_data, sample_stats (see :mod:`bnas_pyro.analysis.arviz_data`);
3. ``az.summary``, ``az.plot_posterior``, ``az.plot_forest``, ``az.loo`` on it, and the
   NaN-padded ``(chain, draw, edge, primitive)`` table of gamma;
4. ``bnas_pyro.compare``: three candidate structures fitted as fixed networks and the searched
   supernet, ranked by the evidence of each one's structure (refitted at the vertex), with
   PSIS-LOO (``az.compare``) and its Pareto-k diagnostics beside it as a predictive check.

    python examples/arviz_analysis.py                    # about 2 minutes; plots in runs/arviz_analysis
    python examples/arviz_analysis.py --run-dir RUN_DIR  # analyse a bnas-pyro run's posterior.nc

The package keeps its own ArviZ calls in ``bnas_pyro/analysis/arviz_data.py``; here ArviZ is called
directly, as a user would.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore", category=FutureWarning)  # ArviZ announces its 1.x refactor
warnings.filterwarnings("ignore", category=UserWarning)

import arviz as az  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import bnas_pyro  # noqa: E402
from bnas_pyro import BilevelSearch, Coefficients, load_dataset, mlp_cell_space  # noqa: E402
from bnas_pyro.analysis import arviz_data as post  # noqa: E402
from bnas_pyro.guides import MeanFieldGuide  # noqa: E402
from bnas_pyro.models import BayesianSupernet  # noqa: E402


def search(space, data, epochs: int = 150, seed: int = 0):
    """Evidence-mode search (ELBO over q, A and m jointly) on ``space``."""
    model = BayesianSupernet(space)
    guide = MeanFieldGuide(model, init_scale=0.05, generator=torch.Generator().manual_seed(seed))
    return BilevelSearch(model, guide, Coefficients(), "joint", inner_steps=4, outer_steps=epochs,
                         batch_size=32, lr=0.02, hyper_lr=0.05, seed=seed,
                         progress=False).run(data.x_train, data.y_train)


def analyse(idata, out: Path) -> None:
    print(idata)
    gammas = [v for v in idata.posterior.data_vars if v.startswith("gamma[")]
    print("\naz.summary of the structure (draws of q; r_hat ~ 1 since the draws are independent):")
    print(az.summary(idata, var_names=gammas, kind="stats").round(3).to_string())
    print("\nweight RMS per (edge, primitive) group (near 0: the prior switched the group off):")
    print(az.summary(idata, var_names=["weight_rms"], kind="stats").round(3).to_string())
    print("\nposterior mean of gamma, as one (edge, primitive) table (NaN: not on that edge):")
    print(post.gamma_array(idata).mean(("chain", "draw")).to_pandas().round(3).to_string())
    if "log_likelihood" in idata.groups():
        print("\nPSIS-LOO of the searched supernet:")
        print(az.loo(idata, pointwise=True))
    out.mkdir(parents=True, exist_ok=True)
    axes = az.plot_posterior(idata, var_names=gammas[:2])
    plt.gcf().savefig(out / "plot_posterior.png", dpi=90)
    plt.close("all")
    az.plot_forest(idata, var_names=gammas, combined=True)
    plt.gcf().savefig(out / "plot_forest.png", dpi=90)
    plt.close("all")
    print(f"\nplots: {out / 'plot_posterior.png'} ({len(axes.ravel())} panels), {out / 'plot_forest.png'}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="ArviZ analysis of a structure search")
    p.add_argument("--run-dir", help="analyse RUN_DIR/posterior.nc instead of running a search")
    p.add_argument("--out", default="runs/arviz_analysis", help="where the plots go")
    p.add_argument("--epochs", type=int, default=150)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.run_dir:
        analyse(post.load(Path(args.run_dir) / "posterior.nc"), Path(args.out))
        return

    data = load_dataset("wine", seed=0)
    space = mlp_cell_space(13, 3, hidden=16)
    result = search(space, data, args.epochs)
    print("found structure:", result.structure, f"(q = {result.structure_probability:.3f})")
    idata = result.to_inference_data(x=data.x_train, y=data.y_train, num_draws=400, num_chains=4)
    analyse(idata, Path(args.out))

    # Rank candidate structures, each fitted as a fixed network, by evidence on the training data.
    candidates = {
        "found": result.structure,
        "linear": {"x->h1": "linear", "x->h2": "zero", "h1->h2": "identity", "h1->y": "zero"},
        "relu-relu": {"x->h1": "relu", "x->h2": "zero", "h1->h2": "relu", "h1->y": "zero"},
    }
    fitted = {name: search(space.restrict(choice), data, args.epochs) for name, choice in candidates.items()}
    fitted["supernet"] = result
    print("\nbnas_pyro.compare (by refitted evidence, best first; PSIS-LOO as a predictive check):")
    table = bnas_pyro.compare(fitted, data.x_train, data.y_train, num_draws=400)
    print(table[["rank", "evidence", "evidence_se", "beats_next", "bound", "elpd_loo",
                 "elpd_loo_se", "p_loo", "pareto_k_max", "pareto_k_over_0.7"]].round(3).to_string())


if __name__ == "__main__":
    main()

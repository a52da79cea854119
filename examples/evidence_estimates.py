"""Evidence estimates for a one-hidden-layer network (METHOD.md section 6, the 2018 multistart paper).

The paper (Bakhteev & Strijov, Automation and Remote Control 2018) compared, on Boston housing with
one hidden layer of 50 units, plain SGD, the diagonal-Gaussian ELBO and the multistart ELBO of
gradient descent (its Table: RMSE 8.1 / 5.0 / 3.7).  Boston is no longer bundled with scikit-learn;
this script runs the same comparison on scikit-learn's diabetes data (442 patients, 10 features,
y a disease-progression score with sd ~77):

1. width 50: plain SGD (maximum likelihood), early stopping on a validation split, MAP
   (:class:`~bnas_pyro.guides.DeltaGuide`), the multistart ELBO
   (:class:`~bnas_pyro.guides.MultistartGuide`, METHOD.md section 3) and the mean-field ELBO
   (:class:`~bnas_pyro.guides.MeanFieldGuide`): test RMSE (mean +- sd over the restarts) and the
   evidence estimate where one is defined;
2. model selection: the hidden width in {5, 20, 50, 200} chosen by each evidence estimate, and the
   test RMSE of the chosen width.

The space is x(10) -> h(width) [tanh] -> y(1) [linear]: one primitive per edge, no structure
choice.  Data: a seeded train/validation/test split (60/20/20), standardised with the training
statistics; RMSE is reported in the original units of y.  Fixed hyperparameters h, the same for every
method: prior precision A = fan-in of each layer (so the prior on the function does not grow with the
width, and q_0 of the multistart guide, the Glorot-like N(0, 1/fan_in), is the prior itself) and the
noise precision 1 / (residual variance of a least-squares linear fit on the training split).

    python examples/evidence_estimates.py                          # default: 1-2 minutes, one core
    python examples/evidence_estimates.py --selection-restarts 40  # sharper model selection
    python examples/evidence_estimates.py --full                   # longer runs, 3 split seeds

The multistart ELBO averages log p(y, W^r) over the k restarts: with k = 10 its standard error is
several nats (printed), as large as the differences between the smaller widths.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.datasets import load_diabetes
from torch import Tensor

from bnas_pyro import SearchSpace, estimate_elbo, fit
from bnas_pyro.guides import DeltaGuide, MeanFieldGuide, MultistartGuide
from bnas_pyro.models import BayesianSupernet, NormalLikelihood


# ---------------------------------------------------------------------------------------- data
@dataclass
class Split:
    """Standardised train/validation/test tensors and the scale of y (for RMSE in original units)."""

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    y_mean: float
    y_std: float
    noise_precision: float

    def rmse(self, prediction: Tensor, target: Tensor) -> float:
        """RMSE in the original units of y, from standardised predictions and targets."""
        return float((prediction - target).pow(2).mean().sqrt()) * self.y_std


def load_split(seed: int = 0, val: float = 0.2, test: float = 0.2,
               dtype: torch.dtype = torch.float32) -> Split:
    X, y = load_diabetes(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test, n_val = round(test * len(y)), round(val * len(y))
    te, va, tr = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    mx, sx = X[tr].mean(0), X[tr].std(0)
    my, sy = y[tr].mean(), y[tr].std()
    Xs, ys = (X - mx) / sx, (y - my) / sy
    # noise precision from the residuals of a least-squares linear fit on the training part
    design = np.hstack([Xs[tr], np.ones((len(tr), 1))])
    coef, *_ = np.linalg.lstsq(design, ys[tr], rcond=None)
    resid_var = np.mean((ys[tr] - design @ coef) ** 2)
    t = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
    return Split(t(Xs[tr]), t(ys[tr]), t(Xs[va]), t(ys[va]), t(Xs[te]), t(ys[te]),
                 float(my), float(sy), float(1.0 / resid_var))


# --------------------------------------------------------------------------------------- model
def make_model(width: int, split: Split) -> BayesianSupernet:
    """x(10) -> h(width) tanh -> y(1) linear, A = fan-in per layer, fixed noise precision."""
    space = SearchSpace({"x": split.x_train.shape[1], "h": width, "y": 1},
                        [("x", "h", ["tanh"]), ("h", "y", ["linear"])])
    model = BayesianSupernet(space, likelihood=NormalLikelihood(precision=split.noise_precision))
    fan_in = torch.tensor([float(split.x_train.shape[1]), float(width)])
    with torch.no_grad():
        model.hyper.log_precision.copy_(fan_in.log())  # groups: (x->h, tanh), (h->y, linear)
    return model.to(split.x_train.dtype)


def predict(model: BayesianSupernet, weights: Tensor, x: Tensor) -> Tensor:
    """f(x) for one weight vector (P,) -> (n,), or a stack (k, P) -> (k, n)."""
    with torch.no_grad():
        if weights.dim() == 1:
            return model.supernet(x, weights, [None, None]).squeeze(-1)
        return torch.stack([predict(model, w, x) for w in weights])


def mean_std(values) -> str:
    v = np.asarray(values, dtype=float)
    if v.size == 1:
        return f"{v[0]:.2f}"
    return f"{v.mean():.2f} +- {v.std(ddof=1):.2f}"


# ------------------------------------------------------------------------------------- methods
@dataclass
class Outcome:
    """Test RMSEs (one per restart) and the evidence estimate(s) of one method."""

    rmse: list[float] = field(default_factory=list)
    evidence: list[float] = field(default_factory=list)
    val_rmse: list[float] = field(default_factory=list)
    note: str = ""


def sgd(split: Split, width: int, seed: int, steps: int, lr: float, batch_size: int,
        eval_every: int) -> tuple[float, float, int]:
    """Plain minibatch SGD on the squared error (maximum likelihood, no prior).

    Returns the test RMSE at the end, the test RMSE at the step of best validation RMSE (early
    stopping) and that step.
    """
    torch.manual_seed(seed)
    model = make_model(width, split)
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(model.layout.num_parameters, generator=g) * model.layout.init_std)
    w = w.to(split.x_train.dtype).requires_grad_(True)
    opt = torch.optim.SGD([w], lr=lr)
    n = split.x_train.shape[0]
    best_val, best_test, best_step = math.inf, math.nan, 0
    for step in range(steps + 1):
        if step % eval_every == 0 or step == steps:
            val = split.rmse(predict(model, w.detach(), split.x_val), split.y_val)
            if val < best_val:
                best_val, best_step = val, step
                best_test = split.rmse(predict(model, w.detach(), split.x_test), split.y_test)
        if step == steps:
            break
        idx = torch.randint(n, (batch_size,), generator=g)
        f = model.supernet(split.x_train[idx], w, [None, None]).squeeze(-1)
        loss = (f - split.y_train[idx]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = split.rmse(predict(model, w.detach(), split.x_test), split.y_test)
    return final, best_test, best_step


def map_estimate(split: Split, width: int, seed: int, steps: int, lr: float) -> float:
    """MAP by the Delta guide (Adam on log p(y, W | X, h), full batch); returns the test RMSE."""
    model = make_model(width, split)
    guide = DeltaGuide(model, generator=torch.Generator().manual_seed(seed)).to(split.x_train.dtype)
    fit(model, guide, split.x_train, split.y_train, num_steps=steps, lr=lr, seed=seed,
        progress=False)
    return split.rmse(predict(model, guide.weight_mean(), split.x_test), split.y_test)


def multistart(split: Split, width: int, seed: int, restarts: int, steps: int, fraction: float,
               num_probes: int, patience: int) -> tuple[MultistartGuide, BayesianSupernet]:
    """Gradient descent from ``restarts`` prior draws, stopped at the highest multistart ELBO
    (``patience`` steps without improvement end the run).

    The step size is ``fraction / lambda_max`` with lambda_max the largest power-iteration
    Hessian eigenvalue over the restarts at the start (the guide re-checks beta < 1/lambda_max
    every 25 steps and raises if it fails).
    """
    torch.manual_seed(seed)
    model = make_model(width, split)
    guide = MultistartGuide(model, num_restarts=restarts, step_size=1.0, num_probes=num_probes,
                            check_every=25, generator=torch.Generator().manual_seed(seed))
    lam = float(guide.lambda_max(split.x_train, split.y_train, num_iters=100).abs().max())
    guide.step_size = fraction / lam
    guide.run(split.x_train, split.y_train, num_steps=steps, restore_best=True, patience=patience)
    return guide, model


def mean_field(split: Split, width: int, seed: int, steps: int, lr: float,
               elbo_particles: int, predictive_samples: int) -> tuple[float, float]:
    """Mean-field ELBO (Adam, full batch); returns (test RMSE of the predictive mean, ELBO)."""
    model = make_model(width, split)
    guide = MeanFieldGuide(model, init_scale=1e-2,
                           generator=torch.Generator().manual_seed(seed)).to(split.x_train.dtype)
    fit(model, guide, split.x_train, split.y_train, num_steps=steps, lr=lr, seed=seed,
        progress=False, num_particles=2)
    elbo, _ = estimate_elbo(model, guide, split.x_train, split.y_train,
                            num_particles=elbo_particles)
    with torch.no_grad():
        draws = guide.loc + guide.scale * torch.randn(predictive_samples, guide.loc.shape[0],
                                                      dtype=guide.loc.dtype)
    f = predict(model, draws, split.x_test).mean(0)
    return split.rmse(f, split.y_test), elbo


# ---------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--full", action="store_true",
                   help="longer runs and 3 split seeds (overrides the step counts below)")
    p.add_argument("--width", type=int, default=50, help="hidden width of the comparison")
    p.add_argument("--widths", type=int, nargs="+", default=[5, 20, 50, 200],
                   help="hidden widths for model selection")
    p.add_argument("--restarts", type=int, default=10,
                   help="restarts: seeds of SGD / MAP / mean-field, k of the multistart guide")
    p.add_argument("--selection-restarts", type=int, default=None,
                   help="k of the multistart guide in model selection (default: --restarts); its "
                        "ELBO's standard error shrinks as 1/sqrt(k)")
    p.add_argument("--split-seeds", type=int, nargs="+", default=[0],
                   help="seeds of the train/validation/test split (one full comparison each)")
    p.add_argument("--sgd-steps", type=int, default=3000, help="minibatch (32) SGD steps")
    p.add_argument("--sgd-lr", type=float, default=0.05)
    p.add_argument("--map-steps", type=int, default=400, help="full-batch Adam steps of MAP")
    p.add_argument("--map-lr", type=float, default=0.03)
    p.add_argument("--mf-steps", type=int, default=600, help="full-batch Adam steps of mean field")
    p.add_argument("--mf-lr", type=float, default=0.01)
    p.add_argument("--mf-restarts", type=int, default=2,
                   help="mean-field seeds per width in model selection (the best ELBO is kept)")
    p.add_argument("--ms-steps", type=int, default=300,
                   help="at most this many gradient steps of the multistart guide")
    p.add_argument("--ms-patience", type=int, default=30,
                   help="stop the multistart run after this many steps without a better ELBO")
    p.add_argument("--ms-fraction", type=float, default=0.5,
                   help="multistart step size as a fraction of 1 / lambda_max at the start")
    p.add_argument("--ms-probes", type=int, default=4, help="entropy probes per restart per step")
    p.add_argument("--elbo-particles", type=int, default=200)
    args = p.parse_args(argv)
    if args.full:
        args.sgd_steps, args.map_steps, args.mf_steps = 10000, 2000, 3000
        args.ms_steps, args.ms_patience, args.mf_restarts = 2000, 200, 5
        args.elbo_particles = 1000
        if args.selection_restarts is None:
            args.selection_restarts = 40
        if args.split_seeds == [0]:
            args.split_seeds = [0, 1, 2]
    return args


def compare(split: Split, args: argparse.Namespace, seed0: int) -> dict[str, Outcome]:
    """Part 1: the five methods at one width."""
    width, k = args.width, args.restarts
    out = {name: Outcome() for name in
           ("plain SGD", "early stopping", "MAP (Delta)", "multistart ELBO", "mean-field ELBO")}
    for r in range(k):
        final, stopped, at = sgd(split, width, seed0 + r, args.sgd_steps, args.sgd_lr, 32, 50)
        out["plain SGD"].rmse.append(final)
        out["early stopping"].rmse.append(stopped)
        out["early stopping"].note = "best validation step, not an evidence"
        out["MAP (Delta)"].rmse.append(map_estimate(split, width, seed0 + r, args.map_steps,
                                                    args.map_lr))
        rmse, elbo = mean_field(split, width, seed0 + r, args.mf_steps, args.mf_lr,
                                args.elbo_particles, 100)
        out["mean-field ELBO"].rmse.append(rmse)
        out["mean-field ELBO"].evidence.append(elbo)
    guide, model = multistart(split, width, seed0, k, args.ms_steps, args.ms_fraction,
                              args.ms_probes, args.ms_patience)
    f = predict(model, guide.restarts(), split.x_test)
    ms = out["multistart ELBO"]
    ms.rmse = [split.rmse(fr, split.y_test) for fr in f]
    ms.evidence = [guide.elbo(split.x_train, split.y_train)]
    se = guide.elbo_standard_error(split.x_train, split.y_train)
    ms.note = (f"{k} restarts in one guide (sd over them); ELBO s.e. {se:.2f} "
               f"(S_tau {guide.entropy_se:.2f}); best ELBO at step {guide.num_steps}; "
               f"ensemble RMSE {split.rmse(f.mean(0), split.y_test):.2f}")
    return out


def select(split: Split, args: argparse.Namespace, seed0: int) -> dict[int, dict[str, float]]:
    """Part 2: per width, the multistart and the mean-field ELBO and the test RMSE of each."""
    rows = {}
    for width in args.widths:
        guide, model = multistart(split, width, seed0, args.selection_restarts or args.restarts,
                                  args.ms_steps, args.ms_fraction, args.ms_probes,
                                  args.ms_patience)
        f_test = predict(model, guide.restarts(), split.x_test).mean(0)
        f_val = predict(model, guide.restarts(), split.x_val).mean(0)
        best = None
        for r in range(args.mf_restarts):  # restarts kept by final ELBO (METHOD.md section 3)
            rmse, elbo = mean_field(split, width, seed0 + r, args.mf_steps, args.mf_lr,
                                    args.elbo_particles, 100)
            if best is None or elbo > best[1]:
                best = (rmse, elbo)
        rows[width] = {
            "ms_elbo": guide.elbo(split.x_train, split.y_train),
            "ms_se": guide.elbo_standard_error(split.x_train, split.y_train),
            "ms_rmse": split.rmse(f_test, split.y_test),
            "ms_val_rmse": split.rmse(f_val, split.y_val),
            "ms_steps": guide.num_steps,
            "mf_elbo": best[1],
            "mf_rmse": best[0],
        }
    return rows


def print_comparison(out: dict[str, Outcome], width: int, k: int) -> None:
    print(f"\nTable 1. Diabetes, one hidden layer of {width} tanh units, {k} restarts "
          f"(test RMSE in units of y; mean +- sd over restarts)")
    print(f"{'method':<18} {'test RMSE':>16} {'evidence estimate':>20}  note")
    for name, o in out.items():
        ev = mean_std(o.evidence) if o.evidence else "-"
        print(f"{name:<18} {mean_std(o.rmse):>16} {ev:>20}  {o.note}")


def print_selection(rows: dict[int, dict[str, float]], k: int) -> dict[str, int]:
    print(f"\nTable 2. Hidden width by evidence (ELBO on the training split; MS = multistart with "
          f"{k} restarts, its\n         RMSEs of their ensemble; MF = mean field, best ELBO of its "
          f"seeds; test RMSE in units of y)")
    print(f"{'width':>6} {'multistart ELBO':>16} {'s.e.':>5} {'(steps)':>8} {'MS test RMSE':>13} "
          f"{'MS val RMSE':>12} {'mean-field ELBO':>16} {'MF test RMSE':>13}")
    for w, r in rows.items():
        print(f"{w:>6} {r['ms_elbo']:>16.1f} {r['ms_se']:>5.1f} {r['ms_steps']:>8d} {r['ms_rmse']:>13.2f} "
              f"{r['ms_val_rmse']:>12.2f} {r['mf_elbo']:>16.1f} {r['mf_rmse']:>13.2f}")
    chosen = {
        "multistart ELBO": max(rows, key=lambda w: rows[w]["ms_elbo"]),
        "mean-field ELBO": max(rows, key=lambda w: rows[w]["mf_elbo"]),
        "validation RMSE (MS)": min(rows, key=lambda w: rows[w]["ms_val_rmse"]),
    }
    print(f"\n{'criterion':<22} {'chosen width':>12} {'test RMSE of it':>16}")
    for name, w in chosen.items():
        key = "mf_rmse" if name.startswith("mean-field") else "ms_rmse"
        print(f"{name:<22} {w:>12d} {rows[w][key]:>16.2f}")
    best = min(rows, key=lambda w: rows[w]["ms_rmse"])
    print(f"{'(oracle: best MS test)':<22} {best:>12d} {rows[best]['ms_rmse']:>16.2f}")
    return chosen


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    start = time.time()
    results = {}
    for seed in args.split_seeds:
        split = load_split(seed)
        print(f"\n=== split seed {seed}: train {len(split.y_train)}, validation {len(split.y_val)}, "
              f"test {len(split.y_test)}; y sd {split.y_std:.1f}; noise precision "
              f"{split.noise_precision:.3f} (standardised y) ===")
        out = compare(split, args, seed0=1000 * seed)
        print_comparison(out, args.width, args.restarts)
        rows = select(split, args, seed0=1000 * seed)
        chosen = print_selection(rows, args.selection_restarts or args.restarts)
        results[seed] = {"comparison": out, "selection": rows, "chosen": chosen}
    print(f"\n({time.time() - start:.0f} s)")
    return results


if __name__ == "__main__":
    main()

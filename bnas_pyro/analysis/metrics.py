"""Test metrics: accuracy / RMSE, negative log-likelihood and expected calibration error.

Two kinds of predictor are scored the same way:

- the Bayesian supernet under q: the posterior predictive p(y|x) = E_q p(y|x, W, Gamma), estimated
  with S draws of (W, Gamma) from the guide (:func:`posterior_predictive`; the per-draw densities
  come from the model's own likelihood site, so custom likelihoods work unchanged; a guide that
  enumerates its structures sums them out exactly per weight draw, through the likelihood's
  ``structure_predictive``);
- a plain network (e.g. the derived, retrained one): softmax of its outputs, or for regression a
  Normal with the residual noise level fitted on the training data (:func:`network_predictive`).

NLL is the mean over test points of -log p(y_i | x_i) (nats per point).  ECE uses ``n_bins``
equal-width bins of the top-class confidence: sum_b |B_b| / n * |acc(B_b) - conf(B_b)| (Guo et al.
2017).  RMSE is reported in the original units of the target (``y_std`` undoes standardisation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from pyro import poutine
from torch import Tensor

from bnas_pyro.checks import check_data, check_network_input
from bnas_pyro.models.likelihoods import OBS_SITE


def accuracy(probs: Tensor, y: Tensor) -> float:
    """Fraction of points whose most probable class is the label."""
    return float((probs.argmax(-1) == y).double().mean())


def expected_calibration_error(probs: Tensor, y: Tensor, n_bins: int = 15) -> float:
    """ECE of the top-class confidence over ``n_bins`` equal-width bins of (0, 1]."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf, pred = probs.max(-1)
    correct = (pred == y).double()
    conf = conf.double()
    # bin b holds confidences in (b/n, (b+1)/n]; confidence 0 cannot occur for a probability vector
    bins = torch.clamp(torch.ceil(conf * n_bins).long() - 1, 0, n_bins - 1)
    n = conf.numel()
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        count = int(mask.sum())
        if count:
            ece += count / n * abs(float(correct[mask].mean()) - float(conf[mask].mean()))
    return ece


def classification_metrics(probs: Tensor, y: Tensor, n_bins: int = 15) -> dict[str, float]:
    """accuracy, nll (mean -log p(y_i)) and ece of predictive class probabilities ``probs``."""
    p_true = probs.gather(-1, y.long().unsqueeze(-1)).squeeze(-1).clamp_min(1e-300)
    return {"accuracy": accuracy(probs, y), "nll": float(-p_true.double().log().mean()),
            "ece": expected_calibration_error(probs, y, n_bins)}


def regression_metrics(mean: Tensor, y: Tensor, log_prob: Tensor | None = None,
                       y_std: float = 1.0) -> dict[str, float]:
    """rmse (in original units: times ``y_std``), and nll from pointwise predictive ``log_prob``.

    The NLL is of the standardised target plus log(y_std), i.e. also in original units.
    """
    rmse = float((mean - y).double().pow(2).mean().sqrt()) * float(y_std)
    out = {"rmse": rmse}
    if log_prob is not None:
        out["nll"] = float(-log_prob.double().mean()) + math.log(float(y_std))
    return out


@dataclass
class Predictive:
    """Per-draw predictive quantities of a Bayesian model on inputs ``x``.

    ``log_lik[s, i]`` = log p(y_i | x_i, draw s); ``probs`` (classification) or ``mean`` /
    ``variance`` (regression) are the predictive moments averaged over the draws.
    """

    log_lik: Tensor | None
    probs: Tensor | None = None
    mean: Tensor | None = None
    variance: Tensor | None = None

    @property
    def log_predictive(self) -> Tensor:
        """log p(y_i | x_i, D) = log mean_s p(y_i | x_i, draw s)."""
        S = self.log_lik.shape[0]
        return torch.logsumexp(self.log_lik.double(), 0) - math.log(S)


@torch.no_grad()
def posterior_predictive(model, guide, x: Tensor, y: Tensor | None = None, num_draws: int = 100,
                         batch_size: int | None = 2048) -> Predictive:
    """E_q p(y | x, W, Gamma) from ``num_draws`` guide draws (the model's likelihood site ``obs``).

    Each draw traces the guide once and replays the model on ``x`` (in chunks of
    ``batch_size`` rows with the same draw), so the prediction is of exactly the model.  A guide
    that enumerates its structures (``structure_mixture``: a joint
    :class:`~bnas_pyro.guides.StructuredGuide`) gives, per weight draw, the exact mixture
    sum_s q(s) p(y | x, W, s) through the model's likelihood instead of one structure drawn
    from q(s): the same expectation, without the Monte Carlo error of the structure.
    """
    check_data(x, y, model, guide)
    n = x.shape[0]
    chunks = [(0, n)] if batch_size is None else [(a, min(a + batch_size, n))
                                                  for a in range(0, n, batch_size)]
    mixture = getattr(guide, "structure_mixture", None)
    log_liks, prob_sum, mean_sum, second_sum = [], 0.0, 0.0, 0.0
    for _ in range(num_draws):
        drawn = None if mixture is None else mixture([x[a:b] for a, b in chunks])
        guide_trace = poutine.trace(guide).get_trace(x[:1], None, n) if drawn is None else None
        lls, probs, means, seconds = [], [], [], []
        for i, (a, b) in enumerate(chunks):
            yb = None if y is None else y[a:b]
            if drawn is None:
                tr = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x[a:b], yb, n)
                _add_moments(tr.nodes[OBS_SITE]["fn"], yb, lls, probs, means, seconds)
            else:
                _add_mixture(model, drawn[1][i], drawn[0], yb, lls, probs, means, seconds)
        if lls:
            log_liks.append(torch.cat(lls))
        if probs:
            prob_sum = prob_sum + torch.cat(probs)
        if means:
            mean_sum = mean_sum + torch.cat(means)
            second_sum = second_sum + torch.cat(seconds)
    out = Predictive(torch.stack(log_liks) if log_liks else None)
    if torch.is_tensor(prob_sum):
        out.probs = prob_sum / num_draws
    if torch.is_tensor(mean_sum):
        out.mean = mean_sum / num_draws
        out.variance = second_sum / num_draws - out.mean**2
    return out


def _add_moments(fn, y: Tensor | None, lls: list, probs: list, means: list,
                 seconds: list) -> None:
    """One chunk's pointwise log p(y | draw) and predictive moments from the likelihood's
    distribution ``fn``."""
    if y is not None:
        lls.append(fn.log_prob(y))
    if hasattr(fn, "probs") and not fn.event_shape:  # categorical
        probs.append(fn.probs)
    else:
        means.append(fn.mean)
        seconds.append(fn.variance + fn.mean**2)


def _add_mixture(model, f: Tensor, log_w: Tensor, y: Tensor | None, lls: list, probs: list,
                 means: list, seconds: list) -> None:
    """The same for the mixture sum_s q(s) p(. | f_s) of S structures' outputs ``f``
    (S, rows, *out) with weights ``log_w`` = log q(s)."""
    ll, moments = model.likelihood.structure_predictive(model, f, y)
    w = log_w.exp()

    def mix(v: Tensor) -> Tensor:
        return (w.reshape(-1, *[1] * (v.dim() - 1)) * v).sum(0)

    if ll is not None:
        lls.append(torch.logsumexp(log_w[:, None] + ll, 0))
    if "probs" in moments:
        probs.append(mix(moments["probs"]))
    else:
        means.append(mix(moments["mean"]))
        seconds.append(mix(moments["second"]))


def evaluate_bayesian(model, guide, x: Tensor, y: Tensor, task: str, num_draws: int = 100,
                      y_std: float = 1.0, n_bins: int = 15) -> dict[str, float]:
    """Test metrics of the posterior predictive of (model, guide)."""
    pred = posterior_predictive(model, guide, x, y, num_draws)
    if task == "classification":
        out = classification_metrics(pred.probs, y, n_bins)
        # the exact predictive log density (equal to log of the averaged probs up to rounding)
        out["nll"] = float(-pred.log_predictive.mean())
        return out
    return regression_metrics(pred.mean, y, pred.log_predictive, y_std)


@torch.no_grad()
def network_predictive(net: torch.nn.Module, x: Tensor, task: str, batch_size: int = 4096) -> Tensor:
    """Outputs of a plain network: class probabilities, or the regression mean (squeezed)."""
    check_network_input(net, x)
    outs = [net(x[a:a + batch_size]) for a in range(0, x.shape[0], batch_size)]
    f = torch.cat(outs)
    if task == "classification":
        return torch.softmax(f, -1)
    return f.squeeze(-1) if f.dim() == 2 and f.shape[-1] == 1 else f


def evaluate_network(net: torch.nn.Module, x: Tensor, y: Tensor, task: str,
                     noise_std: float | None = None, y_std: float = 1.0,
                     n_bins: int = 15) -> dict[str, float]:
    """Test metrics of a plain network; regression NLL needs ``noise_std`` (standardised units)."""
    was_training = net.training
    net.eval()
    try:
        pred = network_predictive(net, x, task)
    finally:
        net.train(was_training)
    if task == "classification":
        return classification_metrics(pred, y, n_bins)
    log_prob = None
    if noise_std is not None:
        log_prob = torch.distributions.Normal(pred, float(noise_std)).log_prob(y)
    return regression_metrics(pred, y, log_prob, y_std)


def primary_metric(task: str) -> tuple[str, bool]:
    """The headline metric of a task and whether larger is better."""
    return ("accuracy", True) if task == "classification" else ("rmse", False)


def format_metrics(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in metrics.items())


__all__ = ["Predictive", "accuracy", "classification_metrics", "evaluate_bayesian",
           "evaluate_network", "expected_calibration_error", "format_metrics",
           "network_predictive", "posterior_predictive", "primary_metric", "regression_metrics"]

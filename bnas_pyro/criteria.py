"""The classical model-selection criteria as presets of the same machinery (METHOD.md section 4).

The generalised bilevel problem

    L = E_q log p(y|X,W,Gamma) - c_reg KL(q || p(.|h))                                   (inner)
    Q = c_train E_q log p(y|X,W,Gamma) - c_prior KL(q || p(.|h)) - c_comb sum KL(p(Gamma|h)||p')  (outer)

reduces to the classical criteria by its coefficients, its guide and what h is allowed to do:

============  =====================================  ========  ====================  =========
criterion     coefficients (c_reg, c_train, c_prior)  guide     h                     strategy
============  =====================================  ========  ====================  =========
ml            (0, 1, 0): KL terms off                 Delta     (nothing to fit)      joint
map           (1, 1, 1)                               Delta     fixed                 joint
evidence      (1, 1, 1)                               mean-field fitted (theorem)     joint
holdout       (1, 1, -); Q = E_q log p(y_val|...)     mean-field fitted on validation greedy
aic / bic     evidence search, then the score below   mean-field fitted               joint
============  =====================================  ========  ====================  =========

Each preset also gives the criterion's *score* of a fitted result (higher is better), to compare
results (restarts, the runs of ``enumerate``, different spaces):

- ml: E_q log p(y | X, W, Gamma) on the training data;
- map: log p(y | X, W_map, Gamma) + log p(W_map | h) (E over q(Gamma));
- evidence: the ELBO;
- holdout: E_q log p(y_val | X_val, W, Gamma);
- aic: E_q log p(y | ...) - k;  bic: E_q log p(y | ...) - (k / 2) ln m, with k the number of
  *informative* parameters, those whose KL(q(w_i) || p(w_i | h)) exceeds ``threshold`` nats
  (METHOD.md section 4).  The count is not differentiable, so it scores fitted results instead of
  driving the hypergradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal, Sequence

import torch
from torch import Tensor

from .coefficients import Coefficients
from .objectives import trace_terms

GuideKind = Literal["mean_field", "delta"]


@dataclass(frozen=True)
class Criterion:
    """One preset: coefficients, guide family, whether h is fitted, strategy and score.

    Attributes:
        name: ``ml``, ``map``, ``evidence``, ``holdout``, ``aic`` or ``bic``.
        coefficients: the constant coefficients of the search (c_temp is the user's).
        guide: ``"delta"`` (point-mass weights: ML / MAP) or ``"mean_field"``.
        fit_hyper: move h during the search (False: h stays at its initial value).
        hypergradient: the strategy name for :class:`~bnas_pyro.bilevel.BilevelSearch`.
        validation: Q is the hold-out log-likelihood (``run(x, y, x_val, y_val)``).
        penalty: ``None``, ``"aic"`` or ``"bic"`` (count of informative parameters).
        threshold: the KL (nats) above which a parameter counts as informative.
    """

    name: str
    coefficients: Coefficients
    guide: GuideKind = "mean_field"
    fit_hyper: bool = True
    hypergradient: str = "joint"
    validation: bool = False
    penalty: Literal[None, "aic", "bic"] = None
    threshold: float = 1.0
    description: str = ""

    def with_temperature(self, c_temp: float) -> "Criterion":
        return replace(self, coefficients=self.coefficients.replace(c_temp=c_temp))

    def make_guide(self, model, **options: Any):
        """The guide this criterion needs (``options`` go to its constructor)."""
        from .guides import DeltaGuide, MeanFieldGuide

        return (DeltaGuide if self.guide == "delta" else MeanFieldGuide)(model, **options)

    def search(self, model, guide=None, **options: Any):
        """A :class:`~bnas_pyro.bilevel.BilevelSearch` configured for this criterion.

        ``options`` go to the search (``inner_steps``, ``outer_steps``, ``lr``, ...); a fixed h is
        a hyper step size of 0.
        """
        from .bilevel import BilevelSearch

        guide = guide if guide is not None else self.make_guide(model)
        options.setdefault("hypergradient", self.hypergradient)
        options.setdefault("validation", self.validation)
        if not self.fit_hyper:
            options["hyper_lr"] = 0.0
        return BilevelSearch(model, guide, self.coefficients, **options)

    # ------------------------------------------------------------------ scores
    def score(self, result_or_model, x: Tensor, y: Tensor | None = None, guide=None,
              x_val: Tensor | None = None, y_val: Tensor | None = None,
              num_particles: int = 200) -> float:
        """The criterion's value of a fitted search (a SearchResult, or a model with ``guide``);
        higher is better.  Monte Carlo over q with ``num_particles`` draws."""
        model = getattr(result_or_model, "model", result_or_model)
        guide = guide if guide is not None else getattr(result_or_model, "guide")
        n = x.shape[0]
        if self.validation:
            if x_val is None:
                raise ValueError(f"criterion {self.name!r} needs x_val, y_val")
            terms = _mean_terms(model, guide, x_val, y_val, x_val.shape[0], num_particles)
            return float(terms[0])
        loglik, kl_w, kl_s = _mean_terms(model, guide, x, y, n, num_particles)
        if self.name == "evidence":
            return float(loglik - kl_w - kl_s)
        if self.name == "map":
            return float(loglik - kl_w)  # KL(Delta || p) = -log p(W_map | h)
        if self.penalty is None:
            return float(loglik)
        from .complexity import informative_parameters

        k = int(informative_parameters(model, guide, self.threshold).sum())
        penalty = k if self.penalty == "aic" else 0.5 * k * math.log(n)
        return float(loglik - penalty)


def _mean_terms(model, guide, x, y, n, num_particles) -> tuple[Tensor, Tensor, Tensor]:
    with torch.no_grad():
        terms = [trace_terms(model, guide, x, y, n) for _ in range(num_particles)]
    return (torch.stack([t.log_likelihood for t in terms]).mean(),
            torch.stack([t.kl_weights for t in terms]).mean(),
            torch.stack([t.kl_structure for t in terms]).mean())


_PRESETS: dict[str, Criterion] = {
    "ml": Criterion("ml", Coefficients(c_reg=0.0, c_train=1.0, c_prior=0.0), guide="delta",
                    fit_hyper=False, description="maximum likelihood: the KL terms are off"),
    "map": Criterion("map", Coefficients(), guide="delta", fit_hyper=False,
                     description="maximum a posteriori: point-mass weights, fixed h"),
    "evidence": Criterion("evidence", Coefficients(), description="ELBO over (q, h) jointly"),
    "holdout": Criterion("holdout", Coefficients(), hypergradient="greedy",
                         validation=True,
                         description="L on the training part, Q = log-likelihood on validation"),
    "aic": Criterion("aic", Coefficients(), penalty="aic",
                     description="E_q log-likelihood - number of informative parameters"),
    "bic": Criterion("bic", Coefficients(), penalty="bic",
                     description="E_q log-likelihood - (k/2) ln m, k informative parameters"),
}
_ALIASES = {"maximum_likelihood": "ml", "hold-out": "holdout", "hold_out": "holdout"}


def available_criteria() -> list[str]:
    return sorted(_PRESETS)


def get_criterion(name: str, c_temp: float | None = None, **changes: Any) -> Criterion:
    """The preset ``name`` (``ml``/``maximum_likelihood``, ``map``, ``evidence``, ``holdout``,
    ``aic``, ``bic``), with c_temp and any field replaced (e.g. ``threshold=2.0``)."""
    key = _ALIASES.get(name, name)
    try:
        c = _PRESETS[key]
    except KeyError:
        raise ValueError(f"unknown criterion {name!r}; available: "
                         f"{', '.join(available_criteria())}") from None
    if c_temp is not None:
        c = c.with_temperature(c_temp)
    return replace(c, **changes) if changes else c


def rank(results: Sequence[Any], criterion: "Criterion | str", x: Tensor, y: Tensor | None = None,
         **score_options: Any) -> list[tuple[float, int]]:
    """(score, index) of each result under ``criterion``, best first."""
    c = get_criterion(criterion) if isinstance(criterion, str) else criterion
    scores = [(c.score(r, x, y, **score_options), i) for i, r in enumerate(results)]
    return sorted(scores, key=lambda s: -s[0])


__all__ = ["Criterion", "available_criteria", "get_criterion", "rank"]

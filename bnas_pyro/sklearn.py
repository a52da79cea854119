"""scikit-learn estimators: :class:`BNASClassifier` and :class:`BNASRegressor`.

``fit(X, y)`` standardises X (and a regression target) with the statistics of the data it is
given, runs the structure search a :class:`~bnas_pyro.app.config.RunConfig` describes (the same
build and drive stages as ``bnas-pyro search``, :mod:`bnas_pyro.app.builders`,
:mod:`bnas_pyro.app.drivers`) and keeps q(W, Gamma).  Fitted attributes:

- ``structure_``: edge -> primitive, the argmax structure of q (METHOD.md sections 2-3);
- ``structure_probabilities_``: edge -> q(argmax gamma^e = l) per primitive;
- ``ranking_``: the ``top_k`` most probable structures under q ranked by their evidence on the
  fitted data, best first: a list of :class:`~bnas_pyro.analysis.ranking.RankedEvidence`
  (``structure``, ``evidence`` +- ``evidence_se``, ``q``, ``beats_next``: the probability that it
  beats the next; q(W | s) refitted ``rank_refit_steps`` steps at each structure,
  :func:`~bnas_pyro.analysis.ranking.rank_structures`, METHOD.md sections 2-3); empty when
  ``top_k`` is 0;
- ``evidence_``, ``evidence_se_``: the evidence estimate log p(D | s, h) of the best-ranked
  structure and its standard error (``nan`` when ``top_k`` is 0);
- ``top_structures_``: the ``top_k`` most probable structures under q, ``[(structure, probability)]``;
- ``elbo_``, ``elbo_se_``: the ELBO of q(W, Gamma), a lower bound of log p(D | h), on the fitted
  data (Monte Carlo estimate and its standard error);
- ``n_features_in_``, ``feature_names_in_`` (when X has column names), ``classes_``.

**Predictions.** ``prediction="bma"`` (the default) is Bayesian model averaging over q:
``predict_proba`` is (1/S) sum_s p(y | x, W_s, Gamma_s) over S = ``predictive_draws`` draws of
q (structures included), and a regression's ``predict(X, return_std=True)`` also gives the
predictive standard deviation sqrt(E_q[Var(y | x, W, Gamma)] + Var_q(E[y | x, W, Gamma])) in the
target's units.  The draws are seeded by ``random_state``, so predictions are reproducible and
each row's prediction does not depend on the other rows.  ``prediction="derived"`` uses the
derived network instead: the argmax structure, retrained from scratch for ``retrain_epochs``
(as ``bnas-pyro search`` retrains it); its regression std is the training residual std.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from bnas_pyro.analysis.export import DerivedNetwork
from bnas_pyro.analysis.metrics import posterior_predictive
from bnas_pyro.analysis.ranking import RankedEvidence, unrankable_reason
from bnas_pyro.app.builders import build_parts
from bnas_pyro.app.config import config_from_dict
from bnas_pyro.app.drivers import drive
from bnas_pyro.app.runner import derive_network
from bnas_pyro.data import SplitData, fit_standardizer
from bnas_pyro.objectives import estimate_elbo
from bnas_pyro.training import residual_std, train_network


class _BNASEstimator(BaseEstimator):
    """The shared parameters and the search of both estimators (see the module doc).

    Args:
        space, space_options: a built-in search space and its options (``mlp_cell``).
        mode, guide: the criterion mode and the guide family (``bnas-pyro list``).
        epochs, batch_size, lr, hyper_lr: the search budget and step sizes.
        prediction: ``"bma"`` (average over q, default) or ``"derived"`` (the retrained
            derived network).
        predictive_draws: S, the draws of q a ``"bma"`` prediction averages.
        retrain_epochs: retraining epochs of the derived network (``prediction="derived"``).
        top_k: structures ranked in ``ranking_`` (0: no ranking).
        rank_refit_steps: refit steps of q(W | s) per ranked structure.
        config: further keys of the run configuration as a nested dict (e.g.
            ``{"model": {"precision": "shared"}}``); the explicit parameters win.
        random_state: seeds the search and the predictive draws.
        threads: torch's intra-op threads during ``fit`` (``None``: unchanged).
        progress: show the search's progress bar.
    """

    _task = "classification"

    def __init__(self, space: str = "mlp_cell", space_options: Mapping[str, Any] | None = None,
                 mode: str = "evidence", guide: str = "mean_field", epochs: int = 100,
                 batch_size: int = 128, lr: float = 0.02, hyper_lr: float = 0.05,
                 prediction: str = "bma", predictive_draws: int = 50, retrain_epochs: int = 60,
                 top_k: int = 5, rank_refit_steps: int = 300,
                 config: Mapping[str, Any] | None = None,
                 random_state: int = 0, threads: int | None = 1, progress: bool = False):
        self.space = space
        self.space_options = space_options
        self.mode = mode
        self.guide = guide
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.hyper_lr = hyper_lr
        self.prediction = prediction
        self.predictive_draws = predictive_draws
        self.retrain_epochs = retrain_epochs
        self.top_k = top_k
        self.rank_refit_steps = rank_refit_steps
        self.config = config
        self.random_state = random_state
        self.threads = threads
        self.progress = progress

    # ------------------------------------------------------------------ the search
    def _run_config(self):
        tree: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v)
                                for k, v in dict(self.config or {}).items()}
        space = dict(tree.get("space") or {})
        space["name"] = self.space
        if self.space_options is not None:
            space["options"] = dict(self.space_options)
        search = dict(tree.get("search") or {})
        search.update(mode=self.mode, guide=self.guide, epochs=int(self.epochs),
                      batch_size=int(self.batch_size), lr=float(self.lr),
                      hyper_lr=float(self.hyper_lr))
        analysis = dict(tree.get("analysis") or {})
        analysis.update(top_k=max(int(self.top_k), 1), predictive_draws=int(self.predictive_draws))
        retrain = dict(tree.get("retrain") or {})
        retrain["epochs"] = int(self.retrain_epochs)
        tree.update(space=space, search=search, analysis=analysis, retrain=retrain,
                    seed=int(self.random_state), threads=self.threads)
        return config_from_dict(tree)

    def _fit(self, X, y):
        if self.prediction not in ("bma", "derived"):
            raise ValueError(f"prediction must be 'bma' or 'derived', got {self.prediction!r}")
        config = self._run_config()
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=self._task == "regression",
                             ensure_min_samples=2)
        if self._task == "classification":
            check_classification_targets(y)
            self.classes_, y_index = np.unique(y, return_inverse=True)
            if len(self.classes_) < 2:
                raise ValueError(f"the classifier needs at least 2 classes in y, got 1 class "
                                 f"({self.classes_[0]!r})")
            target = y_index
        else:
            target = np.asarray(y, dtype=np.float64)
            if target.ndim != 1:
                raise ValueError(f"y must be one-dimensional, got shape {target.shape}")
        self.x_mean_, self.x_scale_ = fit_standardizer(X)
        if self._task == "regression":
            self.y_mean_ = float(target.mean())
            y_std = float(target.std())
            self.y_scale_ = y_std if y_std > 1e-12 else 1.0
            target = (target - self.y_mean_) / self.y_scale_
        else:
            self.y_mean_, self.y_scale_ = 0.0, 1.0
        dtype = torch.float64 if config.dtype == "float64" else torch.float32
        x = torch.as_tensor((X - self.x_mean_) / self.x_scale_, dtype=dtype)
        t = torch.as_tensor(target, dtype=torch.long if self._task == "classification" else dtype)
        data = SplitData(
            name="X", task=self._task, x_train=x, y_train=t, x_val=x, y_val=t, x_test=x[:0],
            y_test=t[:0], n_classes=len(self.classes_) if self._task == "classification" else None,
            feature_names=[str(n) for n in getattr(self, "feature_names_in_",
                                                   [f"x{i}" for i in range(X.shape[1])])],
            input_shape=(X.shape[1],), x_mean=torch.as_tensor(self.x_mean_),
            x_std=torch.as_tensor(self.x_scale_), y_mean=self.y_mean_, y_std=self.y_scale_,
            class_names=(list(self.classes_) if self._task == "classification" else None))
        previous = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(int(self.threads))
        try:
            with torch.random.fork_rng():
                parts = build_parts(config, data)
                result = drive(parts, None, bool(self.progress)).result
                self.search_result_ = result
                self.structure_ = dict(result.structure)
                self.structure_probabilities_ = result.edge_probabilities()
                self.top_structures_ = [(dict(r.structure), float(r.probability))
                                        for r in result.top_structures(max(int(self.top_k), 1))]
                torch.manual_seed(int(self.random_state))
                self.elbo_, self.elbo_se_ = (float(v) for v in estimate_elbo(
                    result.model, result.guide, x, t, num_particles=20))
                self.ranking_ = self._rank(result, x, t)
                self.evidence_, self.evidence_se_ = (
                    (self.ranking_[0].evidence, self.ranking_[0].evidence_se) if self.ranking_
                    else (float("nan"), float("nan")))
                self.network_ = None
                if self.prediction == "derived":
                    self.network_ = self._retrain(config, parts.space, result, x, t, data)
        finally:
            torch.set_num_threads(previous)
        self.data_ = data
        return self

    def _rank(self, result, x, t) -> list[RankedEvidence]:
        k = int(self.top_k)
        if k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if k == 0:
            return []
        reason = unrankable_reason(result.model)
        if reason is not None:
            warnings.warn(f"ranking_ is empty: {reason}", stacklevel=3)
            return []
        return result.rank(x, t, k=k, refit_steps=int(self.rank_refit_steps),
                           seed=int(self.random_state))

    def _retrain(self, config, space, result, x, t, data: SplitData) -> DerivedNetwork:
        """The derived network retrained on the standardised (x, t); it then carries ``data``'s
        standardisation and target scaling, so it predicts from raw features."""
        net, _ = derive_network(result, space, result.structure, int(self.random_state))
        net = net.to(dtype=x.dtype)
        r = config.retrain
        train_network(net, x, t, self._task, epochs=r.epochs, batch_size=r.batch_size, lr=r.lr,
                      weight_decay=r.weight_decay, seed=int(self.random_state))
        self.residual_std_ = (residual_std(net, x, t) if self._task == "regression" else None)
        return net.set_preprocessing_from(data)

    def _raw(self, X) -> torch.Tensor:
        """X validated, as float64 (what the derived network standardises itself)."""
        check_is_fitted(self, "search_result_")
        return torch.as_tensor(validate_data(self, X, reset=False, dtype=np.float64))

    def _standardised(self, X) -> torch.Tensor:
        check_is_fitted(self, "search_result_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        dtype = self.data_.x_train.dtype
        return torch.as_tensor((X - self.x_mean_) / self.x_scale_, dtype=dtype)

    def _bma(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The average over S draws of q; draw s is seeded by (random_state, s) alone, so the
        prediction of a row does not depend on the other rows (the model's unobserved ``obs``
        site draws as many numbers as there are rows)."""
        result = self.search_result_
        S = int(self.predictive_draws)
        total: dict[str, Any] = {}
        with torch.random.fork_rng():
            for s in range(S):
                torch.manual_seed(int(self.random_state) * 1_000_003 + s)
                pred = posterior_predictive(result.model, result.guide, x, None, 1)
                parts = ({"probs": pred.probs} if pred.probs is not None else
                         {"mean": pred.mean, "second": pred.variance + pred.mean**2})
                for k, v in parts.items():
                    total[k] = v.double() if k not in total else total[k] + v.double()
        out = {k: v / S for k, v in total.items()}
        if "mean" in out:
            out["variance"] = out.pop("second") - out["mean"]**2
        return out

    def network(self) -> DerivedNetwork:
        """The derived network of ``structure_`` with E_q[W] as a self-contained module taking
        raw features (:meth:`SearchResult.derive
        <bnas_pyro.analysis.result.SearchResult.derive>`; the retrained one when
        ``prediction="derived"``), ready for :func:`bnas_pyro.analysis.export.save_network`."""
        check_is_fitted(self, "search_result_")
        net = self.network_ if self.network_ is not None else self.search_result_.derive()
        return net.set_preprocessing_from(self.data_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


class BNASClassifier(ClassifierMixin, _BNASEstimator):
    """Bayesian structure search as a scikit-learn classifier (see :mod:`bnas_pyro.sklearn`).

    ``predict_proba(X)``: (1/S) sum_s softmax f(x; W_s, Gamma_s) over S draws of q (default,
    ``prediction="bma"``) or softmax of the derived network; ``predict`` is its argmax mapped
    to ``classes_``.
    """

    _task = "classification"

    def fit(self, X, y) -> "BNASClassifier":
        return self._fit(X, y)

    def predict_proba(self, X) -> np.ndarray:
        if self.prediction == "derived":  # the network standardises raw features itself
            probs = self.network_.predict_proba(self._raw(X))
        else:
            probs = self._bma(self._standardised(X))["probs"]
        return probs.double().cpu().numpy()

    def predict_log_proba(self, X) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "search_result_")
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class BNASRegressor(RegressorMixin, _BNASEstimator):
    """Bayesian structure search as a scikit-learn regressor (see :mod:`bnas_pyro.sklearn`).

    ``predict(X)`` is the predictive mean E[y | x, D] in the target's units;
    ``predict(X, return_std=True)`` adds the predictive standard deviation.
    """

    _task = "regression"

    def fit(self, X, y) -> "BNASRegressor":
        return self._fit(X, y)

    def predict(self, X, return_std: bool = False):
        if self.prediction == "derived":  # raw features in, the target's units out
            with torch.no_grad():
                mean = self.network_(self._raw(X)).reshape(-1).double()
            std = torch.full_like(mean, float(self.residual_std_) * self.y_scale_)
        else:
            pred = self._bma(self._standardised(X))
            mean = pred["mean"].reshape(-1) * self.y_scale_ + self.y_mean_
            std = pred["variance"].reshape(-1).clamp_min(0).sqrt() * self.y_scale_
        mean = mean.cpu().numpy()
        if return_std:
            return mean, std.cpu().numpy()
        return mean


__all__ = ["BNASClassifier", "BNASRegressor"]

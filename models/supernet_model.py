"""The joint Pyro model p(y, W, Gamma | X, h) of the Bayesian supernet (METHOD.md section 2).

    Gamma ~ prod_e Concrete(m^e, c_temp)            (structure prior)
    W | Gamma ~ N(0, A^{-1})  or  N(0, gamma^2 A^{-1})   (weight prior)
    y_i | x_i, W, Gamma ~ Categorical(f(x_i)) or N(f(x_i), beta^{-1})   (likelihood)

Each of the three pieces is a swappable object called with the model: a user replaces any of them
with their own Pyro code (see ``examples/custom_prior.py``).
"""

from __future__ import annotations

import weakref
from typing import Callable, Sequence

import torch
from pyro.nn import PyroModule
from torch import Tensor

from bnas_pyro.hyperparameters import HyperParameters, PrecisionLevel
from bnas_pyro.search_space import SearchSpace
from bnas_pyro.supernet import Supernet
from bnas_pyro.supernet_structures import (StructurePlan, forward_structures, fusable_space,
                                           plan_structures)

from .likelihoods import CategoricalLikelihood, Likelihood
from .structure_priors import ConcreteGroups, ConcreteStructurePrior, check_temperature
from .weight_priors import GaussianWeightPrior

StructurePrior = Callable[["BayesianSupernet"], Sequence["Tensor | None"]]
WeightPrior = Callable[["BayesianSupernet", Sequence["Tensor | None"]], Tensor]

#: per supernet, the plans of the last few vertices it was evaluated at (outside the module, so
#: that pickles and state dicts do not carry them)
_VERTEX_PLANS: "weakref.WeakKeyDictionary[Supernet, dict]" = weakref.WeakKeyDictionary()
_KEPT_VERTEX_PLANS = 16


def vertex_choices(gammas: Sequence[Tensor | None]) -> tuple[int, ...] | None:
    """The primitive of every edge where each gamma is exactly one-hot (a vertex of the simplex,
    e.g. a draw of a discrete q(s)), else ``None`` (0 for single-primitive edges); one copy of
    the gammas to the host."""
    multi = [g.reshape(-1) for g in gammas if g is not None]
    values = torch.cat(multi).tolist() if multi else []
    out, position = [], 0
    for g in gammas:
        if g is None:
            out.append(0)
            continue
        k = g.numel()
        part = values[position:position + k]
        position += k
        if sorted(part) != [0.0] * (k - 1) + [1.0]:
            return None
        out.append(part.index(1.0))
    return tuple(out)


def _vertex_plan(supernet: Supernet, choice: tuple[int, ...], device) -> StructurePlan:
    plans = _VERTEX_PLANS.setdefault(supernet, {})
    key = (choice, str(device))
    plan = plans.get(key)
    if plan is None:
        plan = plan_structures(supernet, torch.tensor([choice])).to(device)
        if len(plans) >= _KEPT_VERTEX_PLANS:
            plans.pop(next(iter(plans)))
        plans[key] = plan
    return plan


class BayesianSupernet(PyroModule):
    """A Pyro model over (W, Gamma) for a :class:`SearchSpace`.

    Call signature (shared by every guide): ``model(x, y=None, num_data=None)``, where ``x, y``
    are a minibatch and ``num_data`` the size of the full training set (for the plate's scale).

    Args:
        space: the search space.
        weight_prior: ``prior(model, log_gammas) -> W`` (default :class:`GaussianWeightPrior`).
        structure_prior: ``prior(model) -> list of log gamma`` (default Concrete).
        likelihood: a :class:`Likelihood` (default Categorical).
        precision: A per ``"group"`` (edge, primitive), per ``"parameter"`` (ARD) or ``"shared"``.
        init_log_precision: initial log A.
        temperature: c_temp of the structure prior (> 0); a schedule may change it.
    """

    def __init__(
        self,
        space: SearchSpace,
        weight_prior: WeightPrior | None = None,
        structure_prior: StructurePrior | None = None,
        likelihood: Likelihood | None = None,
        precision: PrecisionLevel = "group",
        init_log_precision: float = 0.0,
        temperature: float = 1.0,
    ):
        super().__init__()
        self.space = space
        self.supernet = Supernet(space)
        self.weight_prior = weight_prior if weight_prior is not None else GaussianWeightPrior()
        self.structure_prior = (structure_prior if structure_prior is not None
                                else ConcreteStructurePrior())
        self.likelihood = likelihood if likelihood is not None else CategoricalLikelihood()
        self.hyper = HyperParameters(
            self.supernet.layout, precision=precision, init_log_precision=init_log_precision,
            noise_precision=self.likelihood.noise_precision,
            learn_noise_precision=self.likelihood.learn_noise_precision)
        self.temperature = temperature
        self.structure_groups = ConcreteGroups(self.supernet.layout.edge_sizes)

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        check_temperature(value)
        self._temperature = float(value)

    @property
    def layout(self):
        return self.supernet.layout

    def forward(self, x: Tensor, y: Tensor | None = None, num_data: int | None = None) -> Tensor:
        # Concrete samples already satisfy logsumexp(log gamma) = 0; normalising keeps gamma on the
        # simplex for any guide (an autoguide's Normal on log gamma is not on that manifold).
        log_gammas = [None if lg is None else lg - lg.logsumexp(-1, keepdim=True)
                      for lg in self.structure_prior(self)]
        weights = self.weight_prior(self, log_gammas)
        gammas = [None if lg is None else lg.exp() for lg in log_gammas]
        f = self.supernet_output(x, weights, gammas)
        return self.likelihood(self, f, y, num_data)

    def supernet_output(self, x: Tensor, weights: Tensor, gammas: Sequence[Tensor | None]) -> Tensor:
        """f(x; W, Gamma).  Where no gradient is taken and Gamma is a vertex (every gamma one-hot:
        the draws of a discrete q(s) in prediction and analysis) on a space of the fused plan,
        only the chosen pairs are computed
        (:func:`~bnas_pyro.supernet_structures.forward_structures`); equal to rounding."""
        if (not torch.is_grad_enabled() and weights.dim() == 1 and x.dim() == 2
                and fusable_space(self.supernet)):
            choice = vertex_choices(gammas)
            if choice is not None:
                plan = _vertex_plan(self.supernet, choice, x.device)
                return forward_structures(self.supernet, x, weights, plan=plan)[0]
        return self.supernet(x, weights, gammas)

    # ------------------------------------------------------------------ fused ELBO terms
    def supports_fused_terms(self) -> bool:
        """Whether :func:`bnas_pyro.objectives.fused_terms` may compute this model's ELBO terms
        without a Pyro trace: the built-in structure prior, weight prior and likelihood (each
        says so itself; a custom one, or a subclass changing ``forward``, keeps the Pyro path)."""
        return (type(self).forward is BayesianSupernet.forward
                and all(getattr(piece, "supports_fused_terms", lambda: False)()
                        for piece in (self.structure_prior, self.weight_prior, self.likelihood)))

    def fused_structure_log_prior(self, log_gamma: Tensor) -> Tensor:
        """log p(Gamma | h) at log gamma given per group (edge, primitive), summed over edges."""
        return self.structure_prior.fused_log_prob(self, log_gamma, self.structure_groups)

    def fused_normalise(self, log_gamma: Tensor) -> Tensor:
        """What :meth:`forward` does to a draw of log gamma (per group): back on the simplex."""
        return self.structure_groups.normalise(log_gamma)

    def fused_weight_prior(self, log_gamma: Tensor):
        """p(W | Gamma, h) with log gamma (normalised) per group."""
        return self.weight_prior.fused_distribution(self, log_gamma)

    def fused_weight_log_precision(self) -> Tensor | None:
        """log A per parameter when p(W | h) = N(0, A^{-1}) ignores Gamma, else ``None``."""
        return self.weight_prior.fused_log_precision(self)

    def fused_log_likelihood(self, weights: Tensor, log_gamma: Tensor, x: Tensor, y: Tensor,
                             num_data: int | None) -> Tensor:
        """log p(y | x, W, Gamma) of the minibatch, scaled to ``num_data``; log gamma normalised."""
        f = self.supernet.forward_groups(x, weights, log_gamma.exp())
        return self.likelihood.fused_log_likelihood(self, f, y, num_data)

    # ------------------------------------------------------------------ checks
    def check_data(self, x: Tensor, y: Tensor | None = None) -> None:
        """Clear errors for data the model cannot take: shapes, NaN / inf, label range."""
        in_shape = self.space.input_shape
        if not torch.is_tensor(x):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if tuple(x.shape[1:]) != tuple(in_shape):
            raise ValueError(f"x has shape {tuple(x.shape)}; the input node "
                             f"{self.space.input!r} expects (batch, {', '.join(map(str, in_shape))})")
        bad = ~torch.isfinite(x)
        if bad.any():
            row, *col = bad.nonzero()[0].tolist()
            raise ValueError(f"x has a non-finite value ({x[(row, *col)].item()}) at row {row}, "
                             f"column {col[0] if len(col) == 1 else tuple(col)}")
        if y is None:
            return
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
        if y.dtype.is_floating_point and not torch.isfinite(y).all():
            i = int((~torch.isfinite(y)).nonzero()[0][0])
            raise ValueError(f"y has a non-finite value at row {i}")
        out = self.space.nodes[self.space.output]
        self.likelihood.check_targets(y, out if isinstance(out, int) else out[0])

    def check_guide(self, guide) -> None:
        """Refuse guides the prior cannot be paired with (METHOD.md section 2)."""
        needs = getattr(self.weight_prior, "requires_structure_coupled_guide", False)
        if needs and not getattr(guide, "couples_weights_to_structure", False):
            raise ValueError(
                f"the structure-scaled weight prior N(0, gamma^2/A) needs a structure-coupled guide "
                f"q(w|gamma) = N(gamma mu, gamma^2 s^2), e.g. MeanFieldGuide(model, "
                f"couple_to_structure=True); {type(guide).__name__} is not coupled, and with it "
                f"E[1/gamma^2] (infinite under a Concrete distribution at c_temp <= 2) makes the "
                f"ELBO ill-posed")

    def log_hyperprior(self) -> Tensor:
        """log p(h) (the weight prior's hyperprior; 0 if it has none)."""
        fn = getattr(self.weight_prior, "log_hyperprior", None)
        return fn(self) if fn is not None else self.hyper.log_precision.new_zeros(())

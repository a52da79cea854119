"""The interface every hypergradient strategy implements (METHOD.md section 5).

A strategy performs one *outer step* of :class:`~bnas_pyro.search.bilevel.BilevelSearch`: it runs the
inner steps T^eta on theta (however it needs to: with the search's optimiser, or unrolled) and
moves h = (log A, m) along its estimate of d Q(T^eta(theta_0, h), h) / d h.  Strategies are
interchangeable by name (:func:`bnas_pyro.hypergradients.get_strategy`) and each is testable
alone on a problem with a known answer.

Gradient strategies (:class:`GradientStrategy`: ``greedy``, ``drmad``, ``hoag``, ``unrolled``)
split the outer step in two: :meth:`GradientStrategy.hypergradient` runs the inner steps and
returns the estimate of dQ/dh without moving h (what the tests compare with finite differences),
and ``outer_step`` applies it with the search's hyper-optimiser.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

#: a minibatch as the search hands it out: ``(x, y, num_data)``, num_data the size of the data
#: set the likelihood is scaled to
Batch = tuple[Tensor, "Tensor | None", int]


@runtime_checkable
class SearchState(Protocol):
    """What a strategy may use of the search it steps (implemented by
    :class:`~bnas_pyro.search.bilevel.BilevelSearch`).

    Attributes: ``model`` (h = ``model.hyper``), ``guide`` (theta), ``coefficients`` (of the
    current outer step), ``inner_steps`` (eta), ``lr`` (the inner step size of the current outer
    step, after any step-size schedule), ``validation`` (whether Q is the hold-out
    log-likelihood), ``inner_optimizer`` and ``hyper_optimizer``.  ``theta`` may be any dict of tensors with the guide's parameter
    names, e.g. unrolled, differentiable functions of h: the guide is then evaluated at it.
    """

    model: Any
    guide: Any
    coefficients: Any
    inner_steps: int
    lr: float
    validation: bool
    inner_optimizer: Any
    hyper_optimizer: Any

    def theta(self) -> dict[str, Tensor]:
        """The guide's trainable parameters by name."""

    def hyper_names(self) -> list[str]:
        """The names (in ``model.hyper``) of the hyperparameters the search moves."""

    def hyper_parameters(self) -> list[Tensor]:
        """The hyperparameters h the search moves, in the order of :meth:`hyper_names`."""

    def next_batch(self) -> Batch:
        """The next training minibatch."""

    def terms(self, theta: Mapping[str, Tensor] | None = None, batch: Batch | None = None) -> Any:
        """The ElboTerms at theta on a batch (the search's particles and fixed noise)."""

    def inner_objective(self, theta: Mapping[str, Tensor] | None = None,
                        batch: Batch | None = None) -> Tensor:
        """L(theta, h) on a batch."""

    def outer_objective(self, theta: Mapping[str, Tensor] | None = None,
                        batch: Batch | None = None) -> Tensor:
        """Q(theta, h) on a batch (or on the validation split)."""

    def hyper_terms(self) -> Tensor:
        """The parts of Q that depend on h alone."""

    def run_inner_steps(self, num_steps: int) -> float:
        """Optimiser steps on theta at fixed h; the last L."""

    def apply_hypergradient(self, grads: Sequence[Tensor | None]) -> None:
        """One optimiser step on h along dQ/dh."""

    def project_hyper(self) -> None:
        """Clamp h onto the search's bounds."""

    def evaluate_outer(self) -> float:
        """Q at the current (theta, h), without gradients."""


@dataclass
class OuterStepInfo:
    """What one outer step reports: the last inner objective L, the outer objective Q, and
    strategy-specific numbers (stored in the :class:`~bnas_pyro.analysis.result.OuterRecord`'s ``extra``)."""

    L: float
    Q: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class HypergradientEstimate:
    """dQ/dh for each of ``search.hyper_parameters()`` (``None``: Q does not depend on it),
    with the L and Q of the step that produced it."""

    grads: list[Tensor | None]
    L: float
    Q: float
    extra: dict[str, Any] = field(default_factory=dict)


class HypergradientStrategy(ABC):
    """One outer step: eta inner steps, then a step on h."""

    name: ClassVar[str] = ""
    #: the inner operator the strategy differentiates through: ``"sgd"`` means T is plain
    #: gradient ascent theta <- theta + lr grad L (METHOD.md section 5), so the search refuses
    #: any other ``inner_optimizer``; ``None`` means any optimiser works.
    inner_operator: ClassVar[str | None] = None
    #: runs data-parallel (``BilevelSearch(parallel=...)``): its gradients come from the search's
    #: optimisers and objectives alone, which sum and average over the ranks
    data_parallel: ClassVar[bool] = False

    @abstractmethod
    def outer_step(self, search: "SearchState") -> OuterStepInfo:
        """Advance theta by the inner steps and h by one hyper-step; report (L, Q)."""

    def state_dict(self) -> dict[str, Any]:
        """Strategy state to checkpoint (e.g. HOAG's tolerance); empty by default."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class GradientStrategy(HypergradientStrategy):
    """A strategy that estimates dQ/dh and takes one optimiser step along it."""

    @abstractmethod
    def hypergradient(self, search: "SearchState") -> HypergradientEstimate:
        """Run the inner steps and return the estimate of dQ/dh (h is not moved)."""

    def outer_step(self, search: "SearchState") -> OuterStepInfo:
        estimate = self.hypergradient(search)
        search.apply_hypergradient(estimate.grads)
        return OuterStepInfo(L=estimate.L, Q=estimate.Q, extra=dict(estimate.extra))


def grads_or_zeros(output: Tensor, inputs: Sequence[Tensor], create_graph: bool = False,
                   retain_graph: bool | None = None) -> list[Tensor]:
    """d output / d inputs, with zeros for inputs that ``output`` does not depend on."""
    if not output.requires_grad:
        return [torch.zeros_like(t) for t in inputs]
    grads = torch.autograd.grad(output, list(inputs), create_graph=create_graph,
                                retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads)]


def grads_or_none(output: Tensor, inputs: Sequence[Tensor],
                  retain_graph: bool | None = None) -> list[Tensor | None]:
    """d output / d inputs, ``None`` for inputs that ``output`` does not depend on."""
    if not output.requires_grad:
        return [None for _ in inputs]
    return list(torch.autograd.grad(output, list(inputs), retain_graph=retain_graph,
                                    allow_unused=True))


def add_grads(a: Sequence[Tensor | None], b: Sequence[Tensor | None],
              scale: float = 1.0) -> list[Tensor | None]:
    """a + scale * b elementwise, where ``None`` is an exact zero (and None + None is None)."""
    out: list[Tensor | None] = []
    for x, y in zip(a, b):
        if y is None:
            out.append(x)
        elif x is None:
            out.append(scale * y)
        else:
            out.append(x + scale * y)
    return out


def dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """sum_i <a_i, b_i> over two lists of tensors."""
    total = None
    for x, y in zip(a, b):
        term = (x * y).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("dot of two empty lists")
    return total

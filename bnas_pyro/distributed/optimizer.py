"""An optimiser whose every step first averages the gradients over the ranks.

With the objective built as :mod:`bnas_pyro.distributed.collectives` describes, the gradient of
the global objective is the mean of the ranks' gradients, dF/dtheta = (1 / R) sum_r g_r; this
wrapper takes it (one flat all-reduce) right before the wrapped optimiser's step, so every rank
takes the same step from the same state and theta (or h) stays identical on every rank.
"""

from __future__ import annotations

from typing import Any

import torch


class GradientAveragingOptimizer:
    """``optimizer`` with ``step()`` preceded by the mean of every parameter's gradient over
    the ranks of ``parallel`` (a :class:`~bnas_pyro.distributed.group.DataParallel`).

    ``base`` is the wrapped optimiser (step-size schedulers are built on it); everything else
    (``param_groups``, ``state``, ``state_dict``, ...) is the wrapped optimiser's, so a
    checkpoint of a distributed search is the same as that of a single-process one.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, parallel):
        self.base = optimizer
        self.parallel = parallel

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.base.param_groups for p in group["params"]]

    def step(self, closure=None) -> Any:
        if closure is not None:
            raise ValueError("a closure would recompute the loss on one rank only; "
                             "call step() after backward()")
        self.parallel.average_gradients(self._params())
        return self.base.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base.load_state_dict(state)

    @property
    def param_groups(self):
        return self.base.param_groups

    @property
    def state(self):
        return self.base.state

    def __getattr__(self, name: str) -> Any:
        if name in ("base", "parallel"):
            raise AttributeError(name)
        return getattr(self.base, name)


__all__ = ["GradientAveragingOptimizer"]

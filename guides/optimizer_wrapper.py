"""An optimiser that delegates to another and adds work around its step.

Guides whose parameters do not all move by plain gradient steps (the multistart restarts, the
natural-gradient steps of a discrete q(s)) hand the inner loop such a wrapper through their
``wrap_optimizer`` hook.  It quacks like ``torch.optim.Optimizer`` (``param_groups``, ``state``,
``zero_grad``, ``step``, ``state_dict``), so learning-rate schedules and checkpoints see the base
optimiser.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


class WrappedOptimizer:
    """``step()`` is the base optimiser's step followed by :meth:`after_step`."""

    def __init__(self, base: torch.optim.Optimizer):
        self.base = base

    @property
    def param_groups(self) -> list[dict]:
        return self.base.param_groups

    @property
    def state(self):
        return self.base.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def after_step(self) -> None:
        """What the wrapper does once the base optimiser has stepped (nothing here)."""

    def step(self, closure: Callable[[], Tensor] | None = None):
        loss = self.base.step(closure)
        self.after_step()
        return loss

    def state_dict(self) -> dict:
        return self.base.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.base.load_state_dict(state)


__all__ = ["WrappedOptimizer"]

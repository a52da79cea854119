"""``random``: random search over h, the baseline every paper compares with (METHOD.md section 5).

Each outer step

1. draws h: every element of each learned hyperparameter independently from a uniform
   distribution U(low, high) (defaults below; ``ranges`` overrides them by name),
2. puts theta back to its value at the start of the search (and the inner optimiser back to its
   initial state) and fits it with eta inner steps of the search's optimiser,
3. evaluates Q at the fitted (theta, h) (one Monte Carlo estimate, as every strategy reports),
4. keeps the (h, theta) with the largest Q found so far and leaves the model and guide holding
   it, so the search always ends holding the best point.

Default ranges: ``log_precision`` U(-2, 10) (the initialisation range of the Annals of OR
experiment, METHOD.md section 6); ``structure_logits`` U(-3, 3); ``log_noise_precision``
U(-2, 10).  Draws use torch's global CPU generator (checkpointed with the search), in float64,
then move to each hyperparameter's device and dtype; the search's ``hyper_bounds`` (if any)
then clip them.

The reported Q of a step is that of the point held (the best so far); the candidate's own Q is
in ``extra["candidate_Q"]``.  The best Q is a maximum over noisy estimates, so with a stochastic
Q it is biased upwards; re-evaluate the held point for an unbiased value.
Bias: none (no gradient).  Cost: eta inner steps and one evaluation of Q per outer step.
State (checkpointed): theta's and the optimiser's initial values, the best Q, h and theta.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from .base import HypergradientStrategy, OuterStepInfo, SearchState

DEFAULT_RANGES: dict[str, tuple[float, float]] = {
    "log_precision": (-2.0, 10.0),
    "structure_logits": (-3.0, 3.0),
    "log_noise_precision": (-2.0, 10.0),
}


class RandomSearchStrategy(HypergradientStrategy):
    """Random search over h with theta re-fitted from its initial value at every draw.

    Args:
        ranges: hyperparameter name -> (low, high) of its uniform distribution (merged over
            :data:`DEFAULT_RANGES`).
    """

    name = "random"
    data_parallel = True

    def __init__(self, ranges: Mapping[str, tuple[float, float]] | None = None):
        self.ranges = dict(DEFAULT_RANGES)
        for name, (low, high) in dict(ranges or {}).items():
            if not float(low) <= float(high):
                raise ValueError(f"range of {name} must have low <= high, got ({low}, {high})")
            self.ranges[name] = (float(low), float(high))
        self.initial: dict[str, Any] | None = None
        self.best: dict[str, Any] | None = None

    def _draw(self, search) -> None:
        named = dict(search.model.hyper.named_parameters())
        with torch.no_grad():
            for name in search.hyper_names():
                if name not in self.ranges:
                    raise ValueError(f"random search has no range for hyperparameter {name!r}; "
                                     f"pass ranges={{{name!r}: (low, high)}}")
                low, high = self.ranges[name]
                p = named[name]
                u = torch.rand(p.shape, dtype=torch.float64)
                p.copy_((low + (high - low) * u).to(p))
        search.project_hyper()

    def outer_step(self, search: SearchState) -> OuterStepInfo:
        if self.initial is None:
            self.initial = {"guide": _clone(search.guide.state_dict()),
                            "optimizer": _clone(search.inner_optimizer.state_dict())}
        self._draw(search)
        search.guide.load_state_dict(self.initial["guide"])
        search.inner_optimizer.load_state_dict(_clone(self.initial["optimizer"]))
        for group in search.inner_optimizer.param_groups:  # keep the scheduled step size
            group["lr"] = search.lr
        L = search.run_inner_steps(search.inner_steps)
        Q = search.evaluate_outer()
        if self.best is None or Q > self.best["Q"]:
            self.best = {"Q": Q, "hyper": _clone(search.model.hyper.state_dict()),
                         "guide": _clone(search.guide.state_dict())}
        search.model.hyper.load_state_dict(self.best["hyper"])
        search.guide.load_state_dict(self.best["guide"])
        return OuterStepInfo(L=L, Q=self.best["Q"], extra={"candidate_Q": Q})

    def state_dict(self) -> dict[str, Any]:
        return {"initial": self.initial, "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.initial = state.get("initial")
        self.best = state.get("best")


def _clone(state: Any) -> Any:
    """A deep copy of a (nested) state dict, tensors detached and cloned."""
    if torch.is_tensor(state):
        return state.detach().clone()
    if isinstance(state, Mapping):
        return {k: _clone(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_clone(v) for v in state]
    if isinstance(state, tuple):
        return tuple(_clone(v) for v in state)
    return state

"""Coefficient schedules: a *mode* is a schedule of the coefficients over outer steps (METHOD.md section 4).

A schedule is any callable ``schedule(step, num_steps) -> Coefficients``.  A plain
:class:`~bnas_pyro.coefficients.Coefficients` is the constant schedule.
"""

from __future__ import annotations

from typing import Callable, Protocol, Union, runtime_checkable

from .coefficients import Coefficients


@runtime_checkable
class CoefficientSchedule(Protocol):
    def __call__(self, step: int, num_steps: int) -> Coefficients: ...


ScheduleLike = Union[Coefficients, CoefficientSchedule, Callable[[int, int], Coefficients]]


class Constant:
    """The same coefficients at every step."""

    def __init__(self, coefficients: Coefficients):
        self.coefficients = coefficients

    def __call__(self, step: int, num_steps: int) -> Coefficients:
        return self.coefficients

    def __repr__(self) -> str:
        return f"Constant({self.coefficients})"


def as_schedule(value: ScheduleLike | None) -> CoefficientSchedule:
    """Coefficients -> constant schedule; callables pass through; ``None`` -> evidence mode."""
    if value is None:
        return Constant(Coefficients())
    if isinstance(value, Coefficients):
        return Constant(value)
    if callable(value):
        return value
    raise TypeError(f"expected Coefficients or a schedule callable, got {type(value).__name__}")

"""Coefficient schedules and the search modes built from them (METHOD.md section 4).

A schedule is any callable ``schedule(step, num_steps) -> Coefficients`` over the outer steps of a
:class:`~bnas_pyro.search.bilevel.BilevelSearch`; a plain
:class:`~bnas_pyro.coefficients.Coefficients` is the constant schedule.  A *mode* is a named
schedule (with the hypergradient it needs and, for the classical criteria, its guide family, whether
h moves and whether Q is a hold-out likelihood), so a new mode is a few lines, not a new loop:

- ``evidence``: c_reg = c_train = c_prior = 1, c_comb = 0 (single-level ELBO maximisation);
- ``grow``: c_prior decreasing over the run (the prior loosens: complexity increases);
- ``prune``: c_prior increasing (the prior tightens: complexity decreases, weights can be pruned);
- ``enumerate``: runs f_1..f_N, run i with P = the structures found by runs 1..i-1 and c_comb < 0
  acting on the structure prior p(Gamma | h) (:class:`EnumerateMode`);
- ``ml``, ``map``, ``holdout``: the classical criteria as presets of the same machinery
  (maximum likelihood and MAP with point-mass weights and h fixed; hold-out validation); their
  scores, AIC and BIC included, are in :mod:`bnas_pyro.analysis.criteria`;
- temperature annealing of c_temp towards 0, combinable with any of them (:func:`anneal`).

The progress of step k out of n is p = k / (n - 1) (0 at the first outer step, 1 at the last), and
a ramp from a to b is geometric, a (b / a)^p, unless ``kind="linear"``: a + (b - a) p.

User-defined schedules: any function of the progress, ``custom(lambda p: {"c_prior": 1 + 9 p})``,
or any callable with the ``(step, num_steps)`` signature; :func:`register_mode` adds one by name.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Literal, Mapping, Protocol, Sequence, Union, runtime_checkable

from bnas_pyro.coefficients import Coefficients
from bnas_pyro.guides import guide_class
from bnas_pyro.registry import Registry
from bnas_pyro.structure_targets import StructureDistribution, StructureMixture, StructureTarget

RampKind = Literal["geometric", "linear"]


@runtime_checkable
class CoefficientSchedule(Protocol):
    def __call__(self, step: int, num_steps: int) -> Coefficients: ...


ScheduleLike = Union[Coefficients, CoefficientSchedule, Callable[[int, int], Coefficients]]


def progress(step: int, num_steps: int) -> float:
    """p = step / (num_steps - 1) in [0, 1] (0 for a one-step run)."""
    return 0.0 if num_steps <= 1 else min(max(step / (num_steps - 1), 0.0), 1.0)


def ramp(start: float, end: float, p: float, kind: RampKind = "geometric") -> float:
    """start (end / start)^p (geometric, for positive values) or start + (end - start) p (linear)."""
    if kind == "linear" or start == end:
        return start + (end - start) * p
    if kind != "geometric":
        raise ValueError(f"ramp kind must be 'geometric' or 'linear', got {kind!r}")
    if start <= 0 or end <= 0:
        raise ValueError(f"a geometric ramp needs positive ends, got {start} -> {end}; "
                         "use kind='linear'")
    return start * (end / start) ** p


class Schedule:
    """Base class of the schedules here: ``schedule(step, num_steps) -> Coefficients`` (a mode of
    METHOD.md section 4 is a schedule of (c_reg, c_train, c_prior, c_comb, c_temp))."""

    def __call__(self, step: int, num_steps: int) -> Coefficients:
        raise NotImplementedError

    def anneal(self, end: float = 0.05, start: float | None = None,
               kind: RampKind = "geometric") -> "Annealed":
        """This schedule with c_temp annealed from ``start`` to ``end`` (see :class:`Annealed`)."""
        return Annealed(self, end=end, start=start, kind=kind)


class Constant(Schedule):
    """The same coefficients at every step: c(k) = c (METHOD.md section 4)."""

    def __init__(self, coefficients: Coefficients):
        self.coefficients = coefficients

    def __call__(self, step: int, num_steps: int) -> Coefficients:
        return self.coefficients

    def __repr__(self) -> str:
        return f"Constant({self.coefficients})"


class Ramp(Schedule):
    """``base`` with some coefficients moved from a start to an end value over the run
    (METHOD.md section 4: ``grow`` and ``prune`` ramp c_prior).

    ``ramps`` maps a coefficient name to ``(start, end)``; c(p) = start (end/start)^p
    (geometric, the default: the natural scale of c_prior, c_reg and c_temp) or linear.
    Example: ``Ramp(Coefficients(), c_prior=(100, 0.1))`` is the ``grow`` mode.
    """

    def __init__(self, base: Coefficients | None = None, kind: RampKind = "geometric",
                 **ramps: tuple[float, float]):
        self.base = base if base is not None else Coefficients()
        self.kind = kind
        names = set(self.base.to_dict())
        for name, value in ramps.items():
            if name not in names:
                raise ValueError(f"unknown coefficient {name!r}; coefficients: {sorted(names)}")
            if len(value) != 2:
                raise ValueError(f"ramp of {name} must be (start, end), got {value!r}")
            ramp(float(value[0]), float(value[1]), 0.5, kind)  # validates the ends
        self.ramps = {k: (float(a), float(b)) for k, (a, b) in ramps.items()}
        self(0, 2)
        self(1, 2)  # validate both ends as Coefficients

    def __call__(self, step: int, num_steps: int) -> Coefficients:
        p = progress(step, num_steps)
        return self.base.replace(**{k: ramp(a, b, p, self.kind) for k, (a, b) in self.ramps.items()})

    def __repr__(self) -> str:
        ramps = ", ".join(f"{k}={a:g}->{b:g}" for k, (a, b) in self.ramps.items())
        return f"Ramp({ramps}, {self.kind}, base={self.base})"


class Custom(Schedule):
    """A user-defined schedule from a function of the progress p in [0, 1]: c(p) = fn(p)
    (METHOD.md section 4: a new mode is a few lines).

    ``fn(p)`` returns :class:`Coefficients` or a mapping of the coefficients to change in
    ``base``; ``fn(p, step, num_steps)`` is also accepted (three arguments).
    """

    def __init__(self, fn: Callable[..., "Coefficients | Mapping[str, float]"],
                 base: Coefficients | None = None):
        self.fn = fn
        self.base = base if base is not None else Coefficients()
        try:
            self._arity = len(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            self._arity = 1

    def __call__(self, step: int, num_steps: int) -> Coefficients:
        p = progress(step, num_steps)
        out = self.fn(p, step, num_steps) if self._arity >= 3 else self.fn(p)
        if isinstance(out, Coefficients):
            return out
        if isinstance(out, Mapping):
            return self.base.replace(**{k: float(v) for k, v in out.items()})
        raise TypeError(f"a custom schedule must return Coefficients or a mapping, got "
                        f"{type(out).__name__}")

    def __repr__(self) -> str:
        return f"Custom({getattr(self.fn, '__name__', self.fn)!r})"


def custom(fn: Callable[..., "Coefficients | Mapping[str, float]"],
           base: Coefficients | None = None) -> Custom:
    """A schedule from ``fn(progress) -> Coefficients | {name: value}`` (see :class:`Custom`)."""
    return Custom(fn, base)


class Annealed(Schedule):
    """Any schedule with its c_temp replaced by an annealing path towards 0 (METHOD.md sections 2
    and 4: as c_temp -> 0 the Concrete mass goes to the vertices, the discrete structures).

        c_temp(p) = start (end / start)^p     (geometric; ``kind="linear"`` for a straight line)

    ``start`` defaults to the wrapped schedule's c_temp at the first step.  Starting warm
    matters: METHOD.md section 3 measured early lock-in to a wrong structure when a search
    starts at a low temperature.
    """

    def __init__(self, schedule: ScheduleLike, end: float = 0.05, start: float | None = None,
                 kind: RampKind = "geometric"):
        self.schedule = as_schedule(schedule)
        if not end > 0:
            raise ValueError(f"the final temperature must be > 0, got {end}")
        self.end, self.start, self.kind = float(end), start, kind
        if start is not None and not start > 0:
            raise ValueError(f"the initial temperature must be > 0, got {start}")

    def __call__(self, step: int, num_steps: int) -> Coefficients:
        c = self.schedule(step, num_steps)
        start = self.start if self.start is not None else self.schedule(0, num_steps).c_temp
        return c.replace(c_temp=ramp(float(start), self.end, progress(step, num_steps), self.kind))

    def __getattr__(self, name: str) -> Any:  # expose the wrapped mode's attributes
        if name == "schedule":
            raise AttributeError(name)
        return getattr(self.schedule, name)

    def __repr__(self) -> str:
        start = "start" if self.start is None else f"{self.start:g}"
        return f"Annealed({self.schedule!r}, c_temp {start}->{self.end:g})"


def anneal(schedule: ScheduleLike | None = None, end: float = 0.05, start: float | None = None,
           kind: RampKind = "geometric") -> Annealed:
    """``schedule`` (default: evidence) with c_temp annealed to ``end`` (see :class:`Annealed`)."""
    return Annealed(schedule if schedule is not None else Coefficients(), end, start, kind)


def as_schedule(value: ScheduleLike | None) -> CoefficientSchedule:
    """Coefficients -> constant schedule; callables pass through; ``None`` -> evidence mode."""
    if value is None:
        return Constant(Coefficients())
    if isinstance(value, Coefficients):
        return Constant(value)
    if callable(value):
        return value
    raise TypeError(f"expected Coefficients or a schedule callable, got {type(value).__name__}")


# ============================================================================ modes
class Mode(Schedule):
    """A named schedule (a *mode* of METHOD.md section 4), with what it needs of the search.

    Args:
        name: the registry name.
        schedule: the coefficients over the outer steps.
        hypergradient: the strategy the mode needs to act as intended (the modes that move
            c_train or c_prior need a bilevel strategy: the ``joint`` strategy ignores both).
        description: one line for listings.
        guide: the guide family the criterion is defined with (``"delta"``: point-mass weights,
            for maximum likelihood and MAP; ``None``: any guide).
        fit_hyper: whether h moves (``False``: h stays at its initial value, e.g. MAP at a
            fixed prior).
        validation: Q is the log-likelihood of a validation split (hold-out validation).
    """

    def __init__(self, name: str, schedule: ScheduleLike, hypergradient: str = "joint",
                 description: str = "", *, guide: str | None = None, fit_hyper: bool = True,
                 validation: bool = False):
        self.name = name
        self.schedule = as_schedule(schedule)
        self.hypergradient = hypergradient
        self.description = description
        self.guide, self.fit_hyper, self.validation = guide, bool(fit_hyper), bool(validation)

    def __call__(self, step: int, num_steps: int) -> Coefficients:
        return self.schedule(step, num_steps)

    def check_guide(self, guide) -> None:
        """``ValueError`` unless ``guide`` is of the family this mode is defined with
        (``self.guide``, a name of :data:`bnas_pyro.guides.GUIDES`; ``None`` accepts any)."""
        if self.guide is None:
            return
        family = guide_class(self.guide)
        if not isinstance(guide, family):
            raise ValueError(f"mode {self.name!r} is defined with the {self.guide!r} guide "
                             f"({family.__name__}), got {type(guide).__name__}")

    def anneal(self, end: float = 0.05, start: float | None = None,
               kind: RampKind = "geometric") -> "Mode":
        """The same mode with c_temp annealed towards ``end``."""
        return Mode(self.name, Annealed(self.schedule, end, start, kind), self.hypergradient,
                    self.description + f" (c_temp annealed to {end:g})", guide=self.guide,
                    fit_hyper=self.fit_hyper, validation=self.validation)

    def __repr__(self) -> str:
        return f"Mode({self.name!r}, {self.schedule!r}, hypergradient={self.hypergradient!r})"


def _base(base: Coefficients | Mapping[str, float] | None, **overrides: float) -> Coefficients:
    if base is None:
        base = Coefficients()
    elif isinstance(base, Mapping):
        base = Coefficients(**base)
    return base.replace(**overrides) if overrides else base


def evidence(base: Coefficients | None = None, c_temp: float | None = None) -> Mode:
    """Evidence maximisation: c_reg = c_train = c_prior = 1, c_comb = 0 (METHOD.md section 4, mode 1).

    The bilevel problem is then single-level ELBO maximisation over (theta, h) (the theorem), so
    the ``joint`` strategy solves it exactly.  Only ``c_temp`` is taken from ``base``.
    """
    t = c_temp if c_temp is not None else (base.c_temp if isinstance(base, Coefficients) else 1.0)
    return Mode("evidence", Coefficients(c_temp=t), "joint",
                "maximise the ELBO (evidence lower bound) over q and h jointly")


def grow(base: Coefficients | None = None, start: float = 100.0, end: float = 0.1,
         kind: RampKind = "geometric", hypergradient: str = "hoag") -> Mode:
    """Gradual increase of complexity: c_prior decreasing from ``start`` to ``end`` (mode 2).

    c_prior weighs KL(q* || p(.|h)) in the outer objective Q; a smaller weight lets h loosen the
    prior so that q* can hold more information.  The effect goes through the dependence of
    q*(h) on h, which the ``greedy`` one-step hypergradient barely sees (measured on the degree-0..5
    polynomial problem of ``tests/test_complexity.py``, c_prior = 0.1, 1, 10, 100: C_param 18.1,
    14.1, 11.6, 11.9 with ``hoag`` against 14.50, 14.34, 14.33, 14.33 with ``greedy``), hence ``hoag``.
    """
    if not start > end:
        raise ValueError(f"grow needs c_prior decreasing (start > end), got {start} -> {end}")
    return Mode("grow", Ramp(_base(base), kind, c_prior=(start, end)), hypergradient,
                f"c_prior {start:g} -> {end:g}: complexity increases")


def prune(base: Coefficients | None = None, start: float = 0.1, end: float = 100.0,
          kind: RampKind = "geometric", hypergradient: str = "hoag") -> Mode:
    """Gradual decrease of complexity: c_prior increasing from ``start`` to ``end`` (mode 3).

    The outer problem is pushed towards h with a small KL(q*(h) || p(.|h)): C_param falls
    (METHOD.md section 4 claims C_param -> 0 as c_prior -> infinity) and parameters with a
    relative density rho near 1 can then be pruned (:func:`bnas_pyro.analysis.complexity.prune_mask`).
    """
    if not end > start:
        raise ValueError(f"prune needs c_prior increasing (end > start), got {start} -> {end}")
    return Mode("prune", Ramp(_base(base), kind, c_prior=(start, end)), hypergradient,
                f"c_prior {start:g} -> {end:g}: complexity decreases")


# ---------------------------------------------------------------------------- classical criteria
# METHOD.md section 4: the classical model-selection criteria are presets of the same machinery,
# by their coefficients, their guide and what h may do.  Their scores of a fitted result (AIC and
# BIC included, which count parameters and so cannot drive a gradient) are in
# :mod:`bnas_pyro.analysis.criteria`.
def maximum_likelihood(base: Coefficients | None = None) -> Mode:
    """Maximum likelihood: c_reg = c_prior = 0 (the KL terms are off), point-mass weights, nothing
    to fit in h.  Only ``c_temp`` is taken from ``base``."""
    t = base.c_temp if isinstance(base, Coefficients) else 1.0
    return Mode("ml", Coefficients(c_reg=0.0, c_train=1.0, c_prior=0.0, c_temp=t), "joint",
                "maximum likelihood: the KL terms are off", guide="delta", fit_hyper=False)


def map_estimate(base: Coefficients | None = None) -> Mode:
    """Maximum a posteriori: all coefficients 1, point-mass weights, h fixed at its initial value
    (the prior is the user's, not fitted)."""
    t = base.c_temp if isinstance(base, Coefficients) else 1.0
    return Mode("map", Coefficients(c_temp=t), "joint",
                "maximum a posteriori: point-mass weights, fixed h", guide="delta",
                fit_hyper=False)


def holdout(base: Coefficients | None = None, hypergradient: str = "greedy") -> Mode:
    """Hold-out validation: L on the training split, Q = E_q log p(y_val | X_val, W, Gamma) on the
    validation split (a special case of the outer problem), moved by a bilevel strategy."""
    t = base.c_temp if isinstance(base, Coefficients) else 1.0
    return Mode("holdout", Coefficients(c_temp=t), hypergradient,
                "L on the training part, Q = log-likelihood on validation", validation=True)


# ---------------------------------------------------------------------------- enumerate
class EnumerateMode(Mode):
    """Full enumeration of structures, runs f_1..f_N (METHOD.md section 4, mode 4).

    Run i has P built from the structures s_1..s_{i-1} found by the earlier runs, each as
    ``StructureDistribution.at_structure(space, s_j, mass, rest, target_temperature)`` (the thesis's
    GS(t', [0.99, 0.05, ...])), and c_comb < 0, so its structure prior p(Gamma | h) is pushed away
    from them: Q gets -c_comb KL(p(Gamma | h) || P) > 0.  Run 1 has no P (c_comb = 0).

    ``combine`` says how the found structures form P:

    - ``"sum"``: P = {at_structure(s_1), ..., at_structure(s_{i-1})}, the c_comb term is
      sum_j KL(p || p'_j), as METHOD.md writes it.  With product (per-edge) distributions this
      sum splits into independent per-edge terms, and an edge on which the found structures are
      balanced (e.g. after s and its complement) gets no net push: the run then returns a found
      structure again (measured: 4 distinct structures in 8 runs on a 2x2x2 space,
      ``tests/test_modes.py``).
    - ``"mixture"`` (default): P = {the uniform mixture of at_structure(s_j)}
      (:class:`StructureMixture`): one target whose density is high only near a found structure
      as a whole, so the prior is pushed to a structure not yet found (8 of 8 on that space).

    The coefficients of runs 2..N are ``base`` with c_comb and c_reg = ``coupling``.  With the
    ``joint`` strategy, q ascends L = E log p(y | ...) - c_reg KL(q || p) and the prior logits m
    ascend the partial of Q, -c_prior KL(q || p) - c_comb KL(p || P): the prior is pulled towards q
    with weight c_prior = 1 and pushed away from P with weight |c_comb|, while q(Gamma) follows the
    prior with weight c_reg against the data's weight 1.  A large coupling (default 100, the
    thesis's c_reg in its c_comb experiment) makes q(Gamma) follow the pushed prior; with c_reg = 1
    the Concrete KL(q || p) grows only linearly in the logit gap and the data (whose weights
    co-adapt to the structure found first) keep q on a found structure.  The targets' temperature
    defaults to the run's c_temp: at a different temperature KL(p || p') hardly depends on m (at
    c_temp = 1 against t' = 0.1 it changes by ~1 nat over logits in [-6, 6]) and the push is lost.
    The comb term is estimated with ``comb_samples`` = 256 draws unless given: with few draws its
    gradient near the centre of the simplex (where several targets pull in opposite directions) is
    mostly noise.
    ``anneal_to`` anneals c_temp within each run (METHOD.md: the sequence visits every vertex as
    c_temp -> 0).
    """

    def __init__(self, base: Coefficients | None = None, num_runs: int | None = None,
                 c_comb: float = -200.0, coupling: float | None = 100.0,
                 c_temp: float | None = None, anneal_to: float | None = None,
                 combine: Literal["mixture", "sum"] = "mixture", target_mass: float = 0.99,
                 target_rest: float = 0.05, target_temperature: float | None = None,
                 hypergradient: str = "joint"):
        if not c_comb < 0:
            raise ValueError(f"enumerate needs c_comb < 0 (push away from the found structures), "
                             f"got {c_comb}")
        if combine not in ("mixture", "sum"):
            raise ValueError(f"combine must be 'mixture' or 'sum', got {combine!r}")
        if num_runs is not None and num_runs < 1:
            raise ValueError(f"num_runs must be >= 1, got {num_runs}")
        base = _base(base) if c_temp is None else _base(base, c_temp=c_temp)
        self.base, self.num_runs, self.c_comb = base, num_runs, float(c_comb)
        self.coupling = None if coupling is None else float(coupling)
        self.anneal_to, self.combine = anneal_to, combine
        self.target_mass, self.target_rest = float(target_mass), float(target_rest)
        self.target_temperature = float(target_temperature if target_temperature is not None
                                        else base.c_temp)
        # as a plain schedule (one search) it is run 1 of the enumeration;
        # :func:`bnas_pyro.search.enumeration.run_enumeration` performs all N runs
        super().__init__("enumerate", self.run_schedule(0), hypergradient,
                         "runs f_1..f_N, each pushed away from the structures found before")

    def run_coefficients(self, run: int) -> Coefficients:
        """The coefficients of run ``run`` (0-based): ``base`` for run 0, then c_comb < 0."""
        if run == 0:
            return self.base.replace(c_comb=0.0)
        c = self.base.replace(c_comb=self.c_comb)
        return c.replace(c_reg=self.coupling) if self.coupling is not None else c

    def run_schedule(self, run: int) -> Schedule:
        schedule: Schedule = Constant(self.run_coefficients(run))
        return Annealed(schedule, end=self.anneal_to) if self.anneal_to is not None else schedule

    def targets(self, space, found: Sequence[Mapping[str, str]]) -> list[StructureTarget]:
        """P for the next run, from the structures found so far."""
        if not found:
            return []
        parts = [StructureDistribution.at_structure(space, s, self.target_mass, self.target_rest,
                                                    self.target_temperature) for s in found]
        return parts if self.combine == "sum" else [StructureMixture(parts)]

    def __repr__(self) -> str:
        return (f"EnumerateMode(c_comb={self.c_comb:g}, combine={self.combine!r}, "
                f"coupling={self.coupling}, anneal_to={self.anneal_to}, base={self.base})")


# ---------------------------------------------------------------------------- registry
ModeFactory = Callable[..., Mode]

#: every mode by name: ``factory(base=Coefficients, **options) -> Mode``
MODES: Registry[ModeFactory] = Registry("mode")
for _name, _factory in (("evidence", evidence), ("grow", grow), ("prune", prune),
                        ("enumerate", EnumerateMode), ("ml", maximum_likelihood),
                        ("map", map_estimate), ("holdout", holdout)):
    MODES.register(_name, _factory)
_ALIASES = {"maximum_likelihood": "ml", "hold-out": "holdout", "hold_out": "holdout"}


def register_mode(name: str, factory: ModeFactory, *, overwrite: bool = False) -> None:
    """Add a mode by name: ``factory(base=Coefficients, **options) -> Mode`` (or any schedule)."""
    MODES.register(name, factory, overwrite=overwrite)


def available_modes() -> list[str]:
    return MODES.names()


def get_mode(name: str, base: Coefficients | Mapping[str, float] | None = None,
             anneal_to: float | None = None, **options: Any) -> Mode:
    """The mode ``name``: ``evidence``, ``grow``, ``prune``, ``enumerate``, ``ml``
    (``maximum_likelihood``), ``map``, ``holdout`` (``hold-out``), or a registered one.

    ``base`` gives the coefficients the mode starts from (c_temp included); ``anneal_to`` anneals
    c_temp towards that value over the run (for ``enumerate`` it is the per-run annealing);
    other options go to the mode's factory, e.g. ``get_mode("prune", start=0.1, end=100)``.
    """
    name = _ALIASES.get(name, name)
    factory = MODES.get(name)
    base_c = None if base is None else _base(base)
    if name == "enumerate":
        if anneal_to is not None:
            options["anneal_to"] = anneal_to
        return factory(base=base_c, **options)
    mode = factory(base=base_c, **options)
    if anneal_to is not None:
        mode = mode.anneal(end=anneal_to) if isinstance(mode, Schedule) else Annealed(mode, anneal_to)
    return mode


__all__ = [
    "MODES", "Annealed", "CoefficientSchedule", "Constant", "Custom", "EnumerateMode", "Mode", "Ramp",
    "Schedule", "ScheduleLike", "anneal", "as_schedule", "available_modes", "custom", "evidence",
    "get_mode", "grow", "holdout", "map_estimate", "maximum_likelihood", "progress", "prune",
    "ramp", "register_mode",
]

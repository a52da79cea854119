"""The bilevel search: inner SVI steps on theta, hyper-steps on h (METHOD.md sections 4 and 5).

    theta*(h) = argmax_theta L = E_q log p(y|X,W,Gamma) - c_reg KL(q || p(.|h))
    h*        = argmax_h Q = c_train E_q log p(y|X,W,Gamma) - c_prior KL(q || p(.|h))
                            - sum_{p' in P} c_comb KL(p(Gamma|h) || p') + log p(h)

Each outer step asks the hypergradient strategy to run eta inner steps (the operator T^eta) and to
move h.  The coefficients come from a schedule (a mode), so a new mode is a few lines, not a new
loop.  With ``validation=True``, Q is the expected log-likelihood of a validation split instead
(hold-out validation, a special case of METHOD.md section 4).

theta lives in the guide; h in ``model.hyper``; each has its own optimiser.  ``prepare(x, y)``
sets a search up without running it, and ``hypergradient()`` returns a gradient strategy's
estimate of dQ/dh without moving h (what the finite-difference tests compare).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import torch
from pyro.infer.autoguide import AutoGuide
from torch import Tensor
from torch.func import functional_call
from tqdm.auto import tqdm

from bnas_pyro.analysis.result import OuterRecord, SearchResult
from bnas_pyro.analysis.structure_posterior import edge_probabilities
from bnas_pyro.checks import check_data
from bnas_pyro.coefficients import Coefficients
from bnas_pyro.hypergradients import Batch, GradientStrategy, HypergradientStrategy, get_strategy
from bnas_pyro.inference import (MinibatchSampler, materialise_guide, sync_guide_coefficients,
                                 wrap_for_guide)
from bnas_pyro.modes import Mode, ScheduleLike, as_schedule
from bnas_pyro.objectives import ElboTerms, guide_terms
from bnas_pyro.optimisers import adam
from bnas_pyro.random_state import RandomState
from bnas_pyro.structure_targets import StructureTarget, check_targets, comb_kl

from .checkpoint import CheckpointError, checkpoint_path, load_checkpoint, save_checkpoint
from .data_parallel import (Shard, ShardedSampler, averaging, check_data_parallel,
                            shard_log_likelihood, sharded_inner_steps, synchronise)

#: a step-size schedule: ``factor(step, num_steps) -> float`` multiplies ``lr`` and ``hyper_lr`` at
#: outer step ``step``; or ``make(optimizer) -> torch.optim.lr_scheduler.LRScheduler``, one
#: scheduler per optimiser, stepped after every outer step
LRSchedule = Union[Callable[[int, int], float], Callable[[torch.optim.Optimizer], Any]]
Callback = Callable[["BilevelSearch", OuterRecord], "Mapping[str, Any] | None"]

#: the inner and hyper optimisers by name (Adam fused where torch has the kernel)
_OPTIMISERS = {"adam": adam, "sgd": torch.optim.SGD}


class BilevelSearch:
    """Alternates eta inner steps on theta with one hyper-step on h, for ``outer_steps`` steps.

    Args:
        model: a :class:`~bnas_pyro.models.BayesianSupernet` (h = ``model.hyper``).
        guide: any guide with the model's signature (theta = ``guide.parameters()``).
        coefficients: :class:`Coefficients` or a schedule ``(step, num_steps) -> Coefficients``.
        hypergradient: strategy name (``joint``, ``greedy``, ``drmad``, ``hoag``, ``unrolled``,
            ``random``; see :func:`bnas_pyro.hypergradients.available_strategies`) or an
            instance; ``hypergradient_options`` are passed to its constructor.
        inner_steps: eta, inner SVI steps per outer step.
        outer_steps: number of outer steps.
        lr, inner_optimizer: step size and optimiser (``"adam"`` or ``"sgd"``) for theta.
            ``None`` (default): ``"sgd"`` for the strategies that differentiate through plain
            gradient ascent (``unrolled``, ``drmad``: their inner operator T is
            theta <- theta + lr grad L, METHOD.md section 5; any other choice is refused),
            ``"adam"`` for the others.
        hyper_lr, hyper_optimizer: the same for h.
        learn: names of the hyperparameters to move (default: all that require grad).
        hyper_bounds: name -> (low, high): h is projected onto this box after every step on it
            (projected gradient ascent; e.g. the domain random search draws from).
        batch_size: minibatch size (``None``: full batch).
        num_particles: Monte Carlo draws per objective evaluation.
        fixed_noise: common random numbers for the whole search: every evaluation of L and Q
            replays the same ``num_particles`` draws (captured when the search is prepared), so
            the objectives become deterministic functions of (theta, h) (a sample-average
            approximation).  Exact derivatives and finite differences of the stochastic
            objective then agree, and a fixed point is a point, not a noise band
            (METHOD.md section 5).  Default: fresh draws at every evaluation.
        validation: use the validation split's expected log-likelihood as Q.
        comb_targets: the set P of structure targets for the c_comb term
            (:mod:`bnas_pyro.structure_targets`).
        lr_schedule: the step sizes over the outer steps: ``factor(step, num_steps)``, a
            multiplier of ``lr`` and ``hyper_lr`` at every outer step (e.g.
            ``lambda k, n: 0.1 ** (k / n)``), or ``make(optimizer)`` returning a torch
            ``LRScheduler`` (e.g. ``lambda opt: torch.optim.lr_scheduler.StepLR(opt, 100)``),
            built once for each optimiser and stepped after every outer step.  ``self.lr`` and
            ``self.hyper_lr`` follow the schedule, so the strategies that unroll gradient ascent
            (``greedy``, ``drmad``, ``unrolled``) use the current step size.  Its state is part
            of the checkpoint.
        seed: seeds torch's generator and the minibatch order (same seed, same result).
        checkpoint_dir, checkpoint_every: save the full state every N outer steps; ``run(...,
            resume=True)`` continues from the last checkpoint.
        callbacks: ``cb(search, record) -> dict | None``; a returned dict is stored in
            ``record.extra`` and shown on the progress bar.
        parallel: a :class:`~bnas_pyro.distributed.DataParallel` (one rank of a
            ``torch.distributed`` group; :mod:`bnas_pyro.search.data_parallel`): every global
            minibatch is split over the ranks, the log-likelihood summed and the gradients of
            theta and h averaged, so all ranks hold the same theta and h after every step and
            end where one process on the same global batches ends; rank 0 alone checkpoints,
            and ``resume`` reads rank 0's checkpoint.  ``None``: one process.
    """

    def __init__(
        self,
        model,
        guide,
        coefficients: ScheduleLike | None = None,
        hypergradient: "str | HypergradientStrategy" = "joint",
        *,
        inner_steps: int = 10,
        outer_steps: int = 100,
        lr: float = 1e-2,
        inner_optimizer: str | None = None,
        hyper_lr: float = 1e-2,
        hyper_optimizer: str = "adam",
        learn: Sequence[str] | None = None,
        hyper_bounds: Mapping[str, tuple[float, float]] | None = None,
        batch_size: int | None = None,
        num_particles: int = 1,
        fixed_noise: bool = False,
        validation: bool = False,
        comb_targets: Sequence[StructureTarget] = (),
        comb_samples: int = 16,
        lr_schedule: LRSchedule | None = None,
        seed: int | None = 0,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 10,
        progress: bool = True,
        callbacks: Sequence[Callback] = (),
        hypergradient_options: Mapping[str, Any] | None = None,
        parallel: Any = None,
    ):
        if inner_steps < 0:
            raise ValueError(f"inner_steps must be >= 0, got {inner_steps}")
        if outer_steps < 1:
            raise ValueError(f"outer_steps must be >= 1, got {outer_steps}: a search of no outer "
                             "step ends at the uniform initial q, not at a found structure")
        if int(checkpoint_every) < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
        self.strategy = get_strategy(hypergradient, **dict(hypergradient_options or {}))
        required = getattr(self.strategy, "inner_operator", None)
        if inner_optimizer is None:
            inner_optimizer = required if required is not None else "adam"
        elif required is not None and inner_optimizer != required:
            raise ValueError(
                f"hypergradient {self.strategy.name!r} differentiates through plain gradient ascent "
                f"on L (METHOD.md section 5), so it needs inner_optimizer={required!r}, got "
                f"{inner_optimizer!r}; leave inner_optimizer unset or use 'greedy'/'hoag'/'joint'")
        self.inner_optimizer_name = inner_optimizer
        if required is not None and hasattr(guide, "wrap_optimizer"):
            raise ValueError(
                f"{type(guide).__name__} moves by its own dynamics (wrap_optimizer), but hypergradient "
                f"{self.strategy.name!r} differentiates through its own gradient ascent on the "
                f"guide's parameters and would never move it; use 'joint', 'greedy', 'hoag' or 'random'")
        for name, opt in (("inner_optimizer", inner_optimizer), ("hyper_optimizer", hyper_optimizer)):
            if opt not in _OPTIMISERS:
                raise ValueError(f"{name} must be one of {sorted(_OPTIMISERS)}, got {opt!r}")
        check = getattr(model, "check_guide", None)
        if check is not None:
            check(guide)
        self.parallel = parallel
        if parallel is not None:
            check_data_parallel(self.strategy, guide, batch_size, parallel)
        self.model, self.guide = model, guide
        self.schedule = as_schedule(coefficients)
        self.inner_steps, self.outer_steps = int(inner_steps), int(outer_steps)
        # the step sizes given, and those of the current outer step (``lr_schedule`` moves these;
        # the strategies that unroll gradient ascent read ``self.lr`` as their step size)
        self.base_lr, self.base_hyper_lr = float(lr), float(hyper_lr)
        self.lr, self.hyper_lr = self.base_lr, self.base_hyper_lr
        self.batch_size, self.num_particles = batch_size, int(num_particles)
        self.fixed_noise = bool(fixed_noise)
        self.noise: RandomState | None = None
        self.validation = bool(validation)
        self.comb_targets = check_targets(comb_targets, model.space)
        self.comb_samples = int(comb_samples)
        self.seed = seed
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_every = int(checkpoint_every)
        self.progress, self.callbacks = progress, list(callbacks)
        self.coefficients: Coefficients = self.schedule(0, max(self.outer_steps, 1))
        self.model.temperature = self.coefficients.c_temp
        sync_guide_coefficients(guide, self.coefficients)
        hyper_named = dict(model.hyper.named_parameters())
        if learn is not None:
            unknown = set(learn) - set(hyper_named)
            if unknown:
                raise ValueError(f"unknown hyperparameters in learn: {sorted(unknown)}; "
                                 f"available: {sorted(hyper_named)}")
        self._hyper_names = [n for n, p in hyper_named.items()
                             if p.requires_grad and (learn is None or n in learn)]
        if not self._hyper_names:
            raise ValueError(
                f"learn={None if learn is None else list(learn)} leaves no hyperparameter to move "
                f"(trainable: {sorted(n for n, p in hyper_named.items() if p.requires_grad)}); "
                "to fit q(W, Gamma) at fixed h use bnas_pyro.fit")
        self.hyper_bounds: dict[str, tuple[float, float]] = {}
        for name, (low, high) in dict(hyper_bounds or {}).items():
            if name not in hyper_named:
                raise ValueError(f"unknown hyperparameter in hyper_bounds: {name!r}; "
                                 f"available: {sorted(hyper_named)}")
            if not float(low) <= float(high):
                raise ValueError(f"hyper_bounds[{name!r}] must have low <= high, got ({low}, {high})")
            self.hyper_bounds[name] = (float(low), float(high))
        self.inner_optimizer = averaging(wrap_for_guide(guide, _OPTIMISERS[inner_optimizer](
            [p for p in guide.parameters() if p.requires_grad], lr=self.lr)), parallel)
        self.hyper_optimizer = averaging(
            _OPTIMISERS[hyper_optimizer](self.hyper_parameters(), lr=self.hyper_lr), parallel)
        self.lr_schedule = lr_schedule
        self._lr_factor, self._make_scheduler = _schedule_forms(lr_schedule)
        self._schedulers: list[Any] = []
        self._build_schedulers()
        self.history: list[OuterRecord] = []
        self.step = 0
        self.sampler: MinibatchSampler | None = None
        #: entries added to every checkpoint this search writes (a driver of several searches
        #: records there which search this is and what the finished ones found)
        self.checkpoint_extra: dict[str, Any] = {}
        self.validation_data: tuple[Tensor, Tensor | None] | None = None

    @classmethod
    def for_mode(cls, model, guide, mode: Mode, **options: Any) -> "BilevelSearch":
        """A search that runs ``mode`` as the mode says: its schedule; its hypergradient (unless
        ``hypergradient`` is given); hold-out validation when the mode asks for it
        (``mode.validation``: Q is then the validation log-likelihood, whatever ``validation``
        says); h held at its initial value (a hyper step size of 0) for the modes that do not fit
        it (``mode.fit_hyper`` False: ``ml``, ``map``); and a guide of the mode's family
        (``mode.guide``, e.g. ``"delta"`` for ``ml`` and ``map``), else ``ValueError``.
        ``options`` go to the constructor."""
        if not isinstance(mode, Mode):
            raise TypeError(f"for_mode needs a Mode (bnas_pyro.modes.get_mode), got "
                            f"{type(mode).__name__}")
        mode.check_guide(guide)
        options.setdefault("hypergradient", mode.hypergradient)
        options["validation"] = bool(options.get("validation", False)) or mode.validation
        if not mode.fit_hyper:
            options["hyper_lr"] = 0.0
        return cls(model, guide, mode, **options)

    # ------------------------------------------------------------------ what strategies use
    def theta(self) -> dict[str, Tensor]:
        """The guide's parameters theta by name (the live ``nn.Parameter`` objects)."""
        return {n: p for n, p in self.guide.named_parameters() if p.requires_grad}

    def hyper_names(self) -> list[str]:
        """The names (in ``model.hyper``) of the hyperparameters this search moves."""
        return list(self._hyper_names)

    def hyper_parameters(self) -> list[Tensor]:
        """The hyperparameters h that this search moves (``model.hyper``'s parameters)."""
        named = dict(self.model.hyper.named_parameters())
        return [named[n] for n in self._hyper_names]

    def next_batch(self) -> Batch:
        if isinstance(self.sampler, ShardedSampler):
            return self.sampler.next_shard()
        x, y = next(self.sampler)
        return x, y, self.sampler.num_data

    def terms(self, theta: Mapping[str, Tensor] | None = None, batch: Batch | None = None) -> ElboTerms:
        """ElboTerms at theta (default: the guide's current parameters) on a batch."""
        batch = batch if batch is not None else self.next_batch()
        x, y, n = batch
        with self._noise():
            total = None
            for _ in range(self.num_particles):
                t = (guide_terms(self.model, self.guide, x, y, n) if theta is None
                     else _terms_at(self.model, self.guide, theta, x, y, n))
                total = t if total is None else total + t
        total = total if self.num_particles == 1 else total / self.num_particles
        if isinstance(batch, Shard) and self.parallel is not None:  # the global batch's term
            total = ElboTerms(shard_log_likelihood(self.parallel, total.log_likelihood, batch),
                              total.kl_weights, total.kl_structure)
        return total

    def _noise(self):
        """The fixed draws (``fixed_noise=True``) or nothing (fresh draws)."""
        if self.fixed_noise and self.noise is not None:
            return self.noise.replay()
        return contextlib.nullcontext()

    def inner_objective(self, theta: Mapping[str, Tensor] | None = None,
                        batch: Batch | None = None) -> Tensor:
        """L(theta, h) = E_q log p(y|X,W,Gamma) - c_reg KL(q || p(.|h)) on a minibatch."""
        return self.terms(theta, batch).inner(self.coefficients)

    def hyper_terms(self) -> Tensor:
        """The parts of Q that depend on h alone: log p(h) - c_comb sum_{p'} KL(p(Gamma|h) || p')."""
        value = self.model.log_hyperprior()
        if self.coefficients.c_comb != 0.0 and self.comb_targets:
            with self._noise():
                kl = comb_kl(self.model, self.comb_targets, self.comb_samples)
            value = value - self.coefficients.c_comb * kl
        return value

    def outer_objective(self, theta: Mapping[str, Tensor] | None = None,
                        batch: Batch | None = None) -> Tensor:
        """Q(theta, h): the generalised outer objective, or the hold-out log-likelihood."""
        c = self.coefficients
        if self.validation:
            if self.validation_data is None:
                raise ValueError("validation=True needs x_val, y_val in run()")
            xv, yv = self.validation_data
            q = c.c_train * self.terms(theta, (xv, yv, xv.shape[0])).log_likelihood
        else:
            q = self.terms(theta, batch).outer(c)
        return q + self.hyper_terms()

    def hypergradient(self):
        """The strategy's estimate of dQ/dh at the current state, without moving h.

        Runs the strategy's inner steps (theta moves as in an outer step); needs a gradient
        strategy and a prepared search (:meth:`prepare` or :meth:`run`).  Returns a
        :class:`~bnas_pyro.hypergradients.HypergradientEstimate`.
        """
        if not isinstance(self.strategy, GradientStrategy):
            raise TypeError(f"strategy {self.strategy.name!r} does not estimate a hypergradient")
        if self.sampler is None:
            raise RuntimeError("call prepare(x, y) or run(x, y) first")
        return self.strategy.hypergradient(self)

    def evaluate_outer(self) -> float:
        """Q at the current (theta, h), without gradients (for reporting)."""
        with torch.no_grad():
            return float(self.outer_objective())

    def run_inner_steps(self, num_steps: int) -> float:
        """``num_steps`` optimiser steps on theta at fixed h; returns the last L."""
        if self.parallel is not None:   # one all-reduce per step
            return sharded_inner_steps(self, num_steps)
        last = None   # read once, after the loop: no copy to the host per step
        for _ in range(num_steps):
            self.inner_optimizer.zero_grad(set_to_none=True)
            objective = self.inner_objective()
            (-objective).backward()
            self.inner_optimizer.step()
            last = objective.detach()
        return float("nan") if last is None else float(last)

    def apply_hypergradient(self, grads: Sequence[Tensor | None]) -> None:
        """One optimiser step on h along ``grads`` = dQ/dh (ascent)."""
        params = self.hyper_parameters()
        if len(grads) != len(params):
            raise ValueError(f"expected {len(params)} hypergradients, got {len(grads)}")
        self.hyper_optimizer.zero_grad(set_to_none=True)
        for p, g in zip(params, grads):
            p.grad = None if g is None else -g.detach()
        self.hyper_optimizer.step()
        self.project_hyper()

    def project_hyper(self) -> None:
        """Clamp h onto ``hyper_bounds`` (no-op without bounds)."""
        if not self.hyper_bounds:
            return
        named = dict(self.model.hyper.named_parameters())
        with torch.no_grad():
            for name, (low, high) in self.hyper_bounds.items():
                named[name].clamp_(low, high)

    # ------------------------------------------------------------------ the loop
    def prepare(self, x: Tensor, y: Tensor | None = None, x_val: Tensor | None = None,
                y_val: Tensor | None = None) -> None:
        """Check the data, seed the generators and set up the minibatch sampler (what
        :meth:`run` does before its first outer step)."""
        check_data(x, y, self.model, self.guide)
        if x_val is not None:
            check_data(x_val, y_val, self.model, self.guide, names=("x_val", "y_val"))
        self.validation_data = None if x_val is None else (x_val, y_val)
        generator = torch.Generator()
        if self.seed is not None:
            torch.manual_seed(self.seed)
            generator.manual_seed(self.seed)
        self.sampler = (MinibatchSampler(x, y, self.batch_size, generator) if self.parallel is None
                        else ShardedSampler(x, y, self.batch_size, generator, self.parallel))
        if isinstance(self.guide, AutoGuide):  # its parameters exist only after a first call
            before = {id(p) for p in self.guide.parameters()}
            materialise_guide(self.guide, x[: self.sampler.batch_size],
                              None if y is None else y[: self.sampler.batch_size], x.shape[0])
            if {id(p) for p in self.guide.parameters()} != before:
                self.inner_optimizer = averaging(wrap_for_guide(
                    self.guide, _OPTIMISERS[self.inner_optimizer_name](
                        [p for p in self.guide.parameters() if p.requires_grad], lr=self.base_lr)),
                    self.parallel)
                self._build_schedulers()
        if self.parallel is not None:  # rank 0's theta, h and generators, once
            synchronise(self.parallel, [self.guide, self.model.hyper], self._device())
        self.noise = RandomState.capture(self._device()) if self.fixed_noise else None

    def run(self, x: Tensor, y: Tensor | None = None, x_val: Tensor | None = None,
            y_val: Tensor | None = None, resume: bool = False) -> SearchResult:
        """Run the outer loop on (x, y); returns a :class:`SearchResult`.

        With ``resume=True`` the search continues from the last checkpoint in
        ``checkpoint_dir`` (if any): a run killed and resumed ends where an uninterrupted run
        with the same seed ends.
        """
        parallel = self.parallel
        main = parallel is None or parallel.is_main
        with self._guard():
            self.prepare(x, y, x_val, y_val)
        if resume:
            if self.checkpoint_dir is None and main:
                raise ValueError("resume=True needs a checkpoint_dir")
            state = load_checkpoint(self.checkpoint_dir) if main else None
            if parallel is not None:  # rank 0's checkpoint on every rank
                with self._guard():
                    state = parallel.broadcast_object(state)
            if state is not None:
                self._resume_from(state)
        start_time = time.perf_counter() - (self.history[-1].wall_time if self.history else 0.0)
        bar = tqdm(range(self.step, self.outer_steps), desc=f"search ({self.strategy.name})",
                   disable=not (self.progress and main), initial=self.step,
                   total=self.outer_steps)
        for k in bar:
            self.coefficients = self.schedule(k, self.outer_steps)
            self.model.temperature = self.coefficients.c_temp
            sync_guide_coefficients(self.guide, self.coefficients)
            self._apply_lr_factor(k)
            with self._guard():   # a lost rank is named, not waited for
                info = self.strategy.outer_step(self)
            self._check_finite(k, info.L, info.Q)
            record = self._record(k, info.L, info.Q, time.perf_counter() - start_time)
            record.extra.update(getattr(info, "extra", None) or {})
            for cb in self.callbacks:
                extra = cb(self, record)
                if extra:
                    record.extra.update(extra)
            self.history.append(record)
            for scheduler in self._schedulers:
                scheduler.step()
            if self._schedulers:
                self._read_optimizer_lrs()
            self.step = k + 1
            bar.set_postfix(L=f"{record.L:.4g}", Q=f"{record.Q:.4g}",
                            c_temp=f"{self.coefficients.c_temp:.3g}",
                            **{k2: (f"{v:.4g}" if isinstance(v, float) else v)
                               for k2, v in record.extra.items()})
            if self.parallel is not None:
                self.parallel.mark_step(self.step)
            if main and self.checkpoint_dir is not None and (
                    self.step % self.checkpoint_every == 0 or self.step == self.outer_steps):
                save_checkpoint(self.checkpoint_dir, {**self.state_dict(), **self.checkpoint_extra})
        bar.close()
        wall = self.history[-1].wall_time if self.history else 0.0
        return SearchResult(self.model, self.guide, list(self.history), wall,
                            info={"strategy": self.strategy.name})

    def _guard(self):
        """Collectives of a data-parallel search: a lost rank ends this one with an error that
        names it (:meth:`bnas_pyro.distributed.DataParallel.guard`)."""
        return self.parallel.guard() if self.parallel is not None else contextlib.nullcontext()

    def _check_finite(self, step: int, L: float, Q: float) -> None:
        """A non-finite objective means the search has left the region where it means anything
        (overflowing data, a step size too large): stop, naming the step and the term.  L is NaN
        without being computed when a step runs no inner step (``inner_steps=0``)."""
        terms = [("Q (the outer objective)", Q)]
        if not (self.inner_steps == 0 and math.isnan(L)):
            terms.insert(0, ("L (the inner objective, the scaled ELBO)", L))
        for name, value in terms:
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"outer step {step}: {name} is {value}; the search stopped instead of "
                    "returning a structure from a non-finite objective (check the data's scale, "
                    "lr and hyper_lr)")

    def _resume_from(self, state: Mapping[str, Any]) -> None:
        """Load a checkpoint read from ``checkpoint_dir``; errors name the file."""
        path = (checkpoint_path(self.checkpoint_dir) if self.checkpoint_dir is not None
                else "rank 0's checkpoint")
        if int(state["step"]) > self.outer_steps:
            raise CheckpointError(f"{path} is at outer step {state['step']} but this search has "
                                  f"only {self.outer_steps} outer steps")
        try:
            self.load_state_dict(state)
        except CheckpointError:
            raise
        except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as err:
            raise CheckpointError(f"{path} does not fit this search ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0] if str(err) else ''})") from None

    # ------------------------------------------------------------------ step sizes
    def _build_schedulers(self) -> None:
        """One torch scheduler per optimiser, for the ``make(optimizer)`` form of ``lr_schedule``."""
        self._schedulers = []
        if self._make_scheduler is None:
            return
        for name, optimizer in (("inner", self.inner_optimizer), ("hyper", self.hyper_optimizer)):
            base = getattr(optimizer, "base", optimizer)   # a guide's wrapper keeps the torch one
            scheduler = self._make_scheduler(base)
            if not callable(getattr(scheduler, "step", None)):
                raise TypeError(f"lr_schedule(optimizer) for the {name} optimiser returned "
                                f"{type(scheduler).__name__}, not a torch LRScheduler")
            self._schedulers.append(scheduler)

    def _apply_lr_factor(self, step: int) -> None:
        """The ``factor(step, num_steps)`` form of ``lr_schedule``: set this step's step sizes."""
        if self._lr_factor is None:
            return
        factor = float(self._lr_factor(step, self.outer_steps))
        if not factor >= 0:
            raise ValueError(f"lr_schedule({step}, {self.outer_steps}) = {factor}: a step-size "
                             "factor must be a finite number >= 0")
        self.lr, self.hyper_lr = self.base_lr * factor, self.base_hyper_lr * factor
        for optimizer, lr in ((self.inner_optimizer, self.lr), (self.hyper_optimizer, self.hyper_lr)):
            for group in optimizer.param_groups:
                group["lr"] = lr

    def _read_optimizer_lrs(self) -> None:
        """``lr`` and ``hyper_lr`` as the optimisers hold them (after a torch scheduler's step)."""
        self.lr = float(self.inner_optimizer.param_groups[0]["lr"])
        self.hyper_lr = float(self.hyper_optimizer.param_groups[0]["lr"])

    def _device(self) -> torch.device:
        for p in self.guide.parameters():
            return p.device
        return torch.device("cpu")

    def _record(self, step: int, L: float, Q: float, wall: float) -> OuterRecord:
        hyper = {n: p.detach().cpu().reshape(-1).tolist()
                 for n, p in self.model.hyper.named_parameters()}
        return OuterRecord(step=step, L=L, Q=Q, coefficients=self.coefficients.to_dict(),
                           hyper=hyper,
                           structure_probabilities=edge_probabilities(self.model, self.guide),
                           wall_time=wall)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        sampler = self.sampler
        return {
            "step": self.step,
            "guide": self.guide.state_dict(),
            "hyper": self.model.hyper.state_dict(),
            "inner_optimizer": self.inner_optimizer.state_dict(),
            "hyper_optimizer": self.hyper_optimizer.state_dict(),
            "strategy": self.strategy.state_dict(),
            "lr_schedulers": [s.state_dict() for s in self._schedulers],
            "history": [r.to_dict() for r in self.history],
            "torch_rng": torch.get_rng_state(),
            "device_rng": RandomState.capture(self._device()).to_dict(),
            "fixed_noise": None if self.noise is None else self.noise.to_dict(),
            "sampler": None if sampler is None else {
                "generator": sampler.generator.get_state(), "order": sampler._order,
                "pos": sampler._pos},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step = int(state["step"])
        self.guide.load_state_dict(state["guide"])
        self.model.hyper.load_state_dict(state["hyper"])
        self.inner_optimizer.load_state_dict(state["inner_optimizer"])
        self.hyper_optimizer.load_state_dict(state["hyper_optimizer"])
        self.strategy.load_state_dict(state["strategy"])
        saved = state.get("lr_schedulers") or []
        if len(saved) != len(self._schedulers):
            raise ValueError(f"the checkpoint holds {len(saved)} step-size scheduler state(s), this "
                             f"search has {len(self._schedulers)}: resume with the lr_schedule the "
                             "checkpointed search had")
        for scheduler, scheduler_state in zip(self._schedulers, saved):
            scheduler.load_state_dict(scheduler_state)
        self._read_optimizer_lrs()
        self.history = [OuterRecord(**r) for r in state["history"]]
        torch.set_rng_state(state["torch_rng"])
        if state.get("device_rng") is not None:
            RandomState.from_dict(state["device_rng"]).restore()
        if state.get("fixed_noise") is not None:
            self.noise = RandomState.from_dict(state["fixed_noise"])
        if state.get("sampler") is not None and self.sampler is not None:
            self.sampler.generator.set_state(state["sampler"]["generator"])
            self.sampler._order = state["sampler"]["order"]
            self.sampler._pos = state["sampler"]["pos"]


def _schedule_forms(lr_schedule: LRSchedule | None) -> tuple[Any, Any]:
    """``(factor, make)``: which of the two forms of ``lr_schedule`` it is, by its number of
    required positional arguments (two: ``factor(step, num_steps)``; one: ``make(optimizer)``)."""
    if lr_schedule is None:
        return None, None
    if not callable(lr_schedule):
        raise TypeError(f"lr_schedule must be factor(step, num_steps) or make(optimizer), got "
                        f"{type(lr_schedule).__name__}")
    try:
        params = inspect.signature(lr_schedule).parameters.values()
    except (TypeError, ValueError):
        return None, lr_schedule
    required = [p for p in params if p.default is p.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return (lr_schedule, None) if len(required) >= 2 else (None, lr_schedule)


def _bind(guide, theta: Mapping[str, Tensor]):
    """The guide evaluated at parameters ``theta`` (a differentiable function of them)."""

    def bound(*args, **kwargs):
        return functional_call(guide, dict(theta), args, kwargs, strict=False)

    return bound


class _TermsAt(torch.nn.Module):
    """``guide_terms(model, guide, ...)`` as a module holding the guide, so that
    ``functional_call`` can evaluate it at other guide parameters and ``guide_terms`` still sees
    the guide itself (and its fast path)."""

    def __init__(self, model, guide):
        super().__init__()
        self.guide = guide
        object.__setattr__(self, "model", model)

    def forward(self, *args):
        return guide_terms(self.model, self.guide, *args)


def _terms_at(model, guide, theta: Mapping[str, Tensor], *args) -> ElboTerms:
    """One draw of the ElboTerms with the guide's parameters replaced by ``theta``."""
    if not isinstance(guide, torch.nn.Module):
        return guide_terms(model, _bind(guide, theta), *args)
    return functional_call(_TermsAt(model, guide), {f"guide.{k}": v for k, v in theta.items()},
                           args, strict=False)

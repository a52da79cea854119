"""The inner loop: SVI steps on the scaled ELBO, i.e. the operator T^eta (METHOD.md sections 3, 5).

:class:`InnerLoop` owns one optimiser over the guide's parameters theta (and, for single-level
evidence maximisation, optionally the model's hyperparameters h) and draws seeded minibatches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from pyro.infer.autoguide import AutoGuide
from torch import Tensor
from tqdm.auto import tqdm

from bnas_pyro.checks import check_data
from bnas_pyro.coefficients import Coefficients
from bnas_pyro.objectives import ScaledELBO
from bnas_pyro.optimisers import adam


class MinibatchSampler:
    """Seeded minibatches of (x, y) without replacement within an epoch."""

    def __init__(self, x: Tensor, y: Tensor | None, batch_size: int | None = None,
                 generator: torch.Generator | None = None):
        self.x, self.y = x, y
        self.num_data = x.shape[0]
        self.batch_size = self.num_data if batch_size is None else min(int(batch_size), self.num_data)
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self._order: Tensor | None = None
        self._pos = 0

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor | None]]:
        return self

    def __next__(self) -> tuple[Tensor, Tensor | None]:
        if self.batch_size == self.num_data:
            return self.x, self.y
        if self._order is None or self._pos + self.batch_size > self.num_data:
            self._order = torch.randperm(self.num_data, generator=self.generator).to(self.x.device)
            self._pos = 0
        idx = self._order[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        # index_select, not indexing: the same rows, several times faster on a CPU
        return self.x.index_select(0, idx), (None if self.y is None else self.y.index_select(0, idx))


def materialise_guide(guide, x: Tensor, y: Tensor | None, num_data: int | None) -> None:
    """Call a Pyro autoguide once so that it creates its parameters (they are made lazily, at
    the first call); an optimiser built before that would never see them."""
    if isinstance(guide, AutoGuide):
        with torch.no_grad():
            guide(x, y, num_data)


def sync_guide_coefficients(guide, coefficients: Coefficients) -> None:
    """Tell a guide that uses the coefficients itself (``set_coefficients``, e.g. the multistart
    guide's own descent on L) what they are now."""
    hook = getattr(guide, "set_coefficients", None)
    if hook is not None:
        hook(coefficients)


def wrap_for_guide(guide, optimizer):
    """Let a guide that moves by its own dynamics hook into every optimiser step.

    A guide may define ``wrap_optimizer(optimizer) -> optimizer`` (e.g. ``MultistartGuide``, whose
    restarts take one gradient-descent step whenever theta does); others are left as they are.
    """
    wrap = getattr(guide, "wrap_optimizer", None)
    return optimizer if wrap is None else wrap(optimizer)


@dataclass
class InnerLoop:
    """eta steps of stochastic gradient ascent on L (T^eta of METHOD.md section 5).

    Args:
        model, guide: the Pyro model and guide (``guide`` is checked against the model's prior).
        coefficients: the coefficients (c_reg is used; c_temp is pushed into the model).
        lr: learning rate of Adam (or ``optimizer_factory``'s optimiser) on theta.
        train_hyperparameters: also move h by the same ELBO gradient (single-level evidence
            maximisation, the ``joint`` strategy).
        num_particles: Monte Carlo draws per step.
    """

    model: torch.nn.Module
    guide: torch.nn.Module
    coefficients: Coefficients = field(default_factory=Coefficients)
    lr: float = 1e-2
    train_hyperparameters: bool = False
    num_particles: int = 1
    hyper_lr: float | None = None
    optimizer_factory: Callable[[list[dict]], torch.optim.Optimizer] = adam
    history: list[float] = field(default_factory=list)

    def __post_init__(self):
        check = getattr(self.model, "check_guide", None)
        if check is not None:
            check(self.guide)
        self.elbo = ScaledELBO(self.coefficients, num_particles=self.num_particles)
        self.set_coefficients(self.coefficients)
        self.optimizer = None  # built at the first step: Pyro autoguides create parameters lazily
        self._differentiated: list[Tensor] = []

    def _build_optimizer(self, x: Tensor, y: Tensor | None, num_data: int | None):
        materialise_guide(self.guide, x, y, num_data)
        groups = [{"params": [p for p in self.guide.parameters() if p.requires_grad], "lr": self.lr}]
        if self.train_hyperparameters:
            groups.append({"params": [p for p in self.model.hyper.parameters() if p.requires_grad],
                           "lr": self.hyper_lr if self.hyper_lr is not None else self.lr})
        optimizer = wrap_for_guide(self.guide, self.optimizer_factory(groups))
        # what the step differentiates: the tensors the optimiser moves by their gradient (h is
        # left alone unless trained; a guide's wrapper may move some of its own otherwise)
        self._differentiated = [p for group in optimizer.param_groups for p in group["params"]]
        return optimizer

    def set_coefficients(self, coefficients: Coefficients) -> None:
        self.coefficients = coefficients
        self.elbo.coefficients = coefficients
        self.model.temperature = coefficients.c_temp
        sync_guide_coefficients(self.guide, coefficients)

    def step(self, x: Tensor, y: Tensor | None = None, num_data: int | None = None) -> float:
        """One SVI step; returns the (negated-loss) value of L before the step."""
        if self.optimizer is None:
            self.optimizer = self._build_optimizer(x, y, num_data)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.elbo.differentiable_loss(self.model, self.guide, x, y, num_data)
        if self.train_hyperparameters and hasattr(self.model, "log_hyperprior"):
            loss = loss - self.model.log_hyperprior()  # h maximises L + log p(h)
        if self._differentiated:
            loss.backward(inputs=self._differentiated)
        else:
            loss.backward()
        self.optimizer.step()
        value = -float(loss.detach())
        self.history.append(value)
        return value

    def run(self, x: Tensor, y: Tensor | None = None, num_steps: int = 1000,
            batch_size: int | None = None, generator: torch.Generator | None = None,
            progress: bool = True, description: str = "SVI") -> list[float]:
        """``num_steps`` steps on seeded minibatches; returns the per-step L values."""
        check_data(x, y, self.model, self.guide)
        sampler = MinibatchSampler(x, y, batch_size, generator)
        values = []
        bar = tqdm(range(num_steps), desc=description, disable=not progress, leave=False)
        for i in bar:
            xb, yb = next(sampler)
            values.append(self.step(xb, yb, sampler.num_data))
            if not torch.isfinite(torch.tensor(values[-1])):
                raise FloatingPointError(f"the objective became non-finite at step {i}: {values[-1]}")
            if i % 25 == 0:
                bar.set_postfix(L=f"{values[-1]:.4g}", c_temp=f"{self.coefficients.c_temp:.3g}")
        return values


def fit(model, guide, x: Tensor, y: Tensor | None = None, num_steps: int = 1000,
        lr: float = 1e-2, coefficients: Coefficients | None = None, batch_size: int | None = None,
        train_hyperparameters: bool = False, seed: int | None = 0, progress: bool = True,
        num_particles: int = 1) -> InnerLoop:
    """Fit ``guide`` (and, optionally, h) by ``num_steps`` SVI steps; returns the loop."""
    generator = None
    if seed is not None:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
    loop = InnerLoop(model, guide, coefficients or Coefficients(), lr=lr,
                     train_hyperparameters=train_hyperparameters, num_particles=num_particles)
    loop.run(x, y, num_steps, batch_size=batch_size, generator=generator, progress=progress)
    return loop

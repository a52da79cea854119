"""A plain DARTS-style baseline and the training of discrete networks (for fair comparisons).

:class:`PointSupernet` is the same supernet (:class:`~bnas_pyro.supernet.Supernet`, same space,
same primitives) with *point* weights and mixing weights ``gamma^e = softmax(alpha^e)``: no priors,
no posterior (Liu, Simonyan, Yang 2019, "DARTS").  :class:`DartsSearch` learns it by first-order
alternating updates: one step on alpha with the loss of a *validation* minibatch, then one step on
the weights with the loss of a *training* minibatch.  The found structure is ``argmax alpha`` per
edge (over all primitives, including ``zero``/``none``, the same rule as the Bayesian search's
argmax of q, so the two are comparable on the same space).

:func:`discrete_network` builds the network of one discrete structure (a ``PointSupernet`` on
``space.restrict(structure)``, no mixing) and :func:`train_network` trains any network on a
:class:`~bnas_pyro.data.SplitData` with a fixed budget (cross-entropy or squared error, Adam).

:func:`collapse_statistics` measures the DARTS failure mode of choosing parameter-free
operations: the fraction of edges that offer a skip/zero primitive and chose one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from bnas_pyro.inference import MinibatchSampler
from bnas_pyro.search_space import SearchSpace
from bnas_pyro.supernet import Supernet


class PointSupernet(nn.Module):
    """The supernet with point weights W (one flat ``nn.Parameter``) and softmax(alpha) mixing.

    Args:
        space: the search space (edges with one primitive get no alpha).
        generator: seeds the initial weights (N(0, init_std) per primitive, as the guides'
            means) and alpha (N(0, 1e-3), as in DARTS).
    """

    def __init__(self, space: SearchSpace, generator: torch.Generator | None = None):
        super().__init__()
        self.space = space
        self.supernet = Supernet(space)
        std = self.supernet.layout.init_std
        self.weights = nn.Parameter(torch.randn(std.shape, generator=generator) * std)
        sizes = self.supernet.layout.edge_sizes
        self.alpha = nn.Parameter(1e-3 * torch.randn(sum(sizes), generator=generator))
        self._starts = [sum(sizes[:e]) for e in range(len(sizes))]
        self._sizes = list(sizes)

    def edge_alpha(self, e: int) -> Tensor:
        return self.alpha[self._starts[e]:self._starts[e] + self._sizes[e]]

    def gammas(self) -> list[Tensor | None]:
        return [None if k == 1 else torch.softmax(self.edge_alpha(e), -1)
                for e, k in enumerate(self._sizes)]

    def forward(self, x: Tensor) -> Tensor:
        return self.supernet(x, self.weights, self.gammas())

    def edge_probabilities(self) -> dict[str, list[float]]:
        """softmax(alpha^e) per edge (1.0 for single-primitive edges)."""
        with torch.no_grad():
            return {e.name: ([1.0] if g is None else g.tolist())
                    for e, g in zip(self.space.edges, self.gammas())}

    @property
    def structure(self) -> dict[str, str]:
        """argmax alpha per edge, as edge name -> primitive label."""
        return self.derive(exclude_zero=False)

    def derive(self, exclude_zero: bool = False) -> dict[str, str]:
        """argmax alpha per edge; with ``exclude_zero`` the zero/none op is never chosen (DARTS's
        own derivation rule) unless it is the edge's only primitive."""
        probs = self.edge_probabilities()
        out = {}
        for e, prims in zip(self.space.edges, self.space.primitive_instances):
            allowed = [l for l in range(len(e)) if not (exclude_zero and prims[l].is_zero)] or [0]
            out[e.name] = e.labels[max(allowed, key=lambda l: probs[e.name][l])]
        return out

    def weight_parameters(self) -> list[nn.Parameter]:
        return [self.weights]

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]


def discrete_network(space: SearchSpace, structure: Mapping[str, str],
                     generator: torch.Generator | None = None) -> PointSupernet:
    """A freshly initialised network of one discrete structure (edge name -> primitive label)."""
    return PointSupernet(space.restrict(dict(structure)), generator=generator)


def task_loss(task: str) -> Callable[[Tensor, Tensor], Tensor]:
    """Mean cross-entropy for classification, mean squared error (halved) for regression."""
    if task == "classification":
        return F.cross_entropy

    def mse(f: Tensor, y: Tensor) -> Tensor:
        f = f.squeeze(-1) if f.dim() == 2 and f.shape[-1] == 1 else f
        return 0.5 * (f - y).pow(2).mean()

    return mse


@dataclass
class DartsResult:
    """What :class:`DartsSearch` returns: the supernet, its structure and the alpha history."""

    network: PointSupernet
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_time: float = 0.0

    @property
    def structure(self) -> dict[str, str]:
        return self.network.structure

    def edge_probabilities(self) -> dict[str, list[float]]:
        return self.network.edge_probabilities()


class DartsSearch:
    """First-order DARTS: alternate an alpha step (validation batch) and a weight step (train batch).

    Args:
        space: the search space.
        task: ``"classification"`` or ``"regression"``.
        epochs: passes over the training data (one weight step and one alpha step per batch).
        batch_size: minibatch size of both splits.
        lr, weight_decay: Adam on the weights.
        arch_lr, arch_weight_decay: Adam on alpha (DARTS: 3e-4 and 1e-3; we default to 3e-3
            because our budgets are short).
        seed: seeds the initial values and the minibatch orders.
    """

    def __init__(self, space: SearchSpace, task: str = "classification", *, epochs: int = 50,
                 batch_size: int = 128, lr: float = 1e-2, weight_decay: float = 1e-4,
                 arch_lr: float = 3e-3, arch_weight_decay: float = 1e-3, seed: int = 0,
                 progress: bool = False):
        self.space, self.task = space, task
        self.epochs, self.batch_size = int(epochs), int(batch_size)
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.arch_lr, self.arch_weight_decay = float(arch_lr), float(arch_weight_decay)
        self.seed, self.progress = int(seed), progress

    def run(self, x: Tensor, y: Tensor, x_val: Tensor, y_val: Tensor) -> DartsResult:
        torch.manual_seed(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        net = PointSupernet(self.space, generator=gen).to(x)
        loss_fn = task_loss(self.task)
        w_opt = torch.optim.Adam(net.weight_parameters(), lr=self.lr, weight_decay=self.weight_decay)
        a_opt = torch.optim.Adam(net.arch_parameters(), lr=self.arch_lr, betas=(0.5, 0.999),
                                 weight_decay=self.arch_weight_decay)
        train = MinibatchSampler(x, y, self.batch_size, torch.Generator().manual_seed(self.seed))
        val = MinibatchSampler(x_val, y_val, self.batch_size,
                               torch.Generator().manual_seed(self.seed + 1))
        steps = max(1, math.ceil(train.num_data / train.batch_size))
        history: list[dict[str, Any]] = []
        start = time.perf_counter()
        bar = tqdm(range(self.epochs), desc="DARTS", disable=not self.progress)
        for epoch in bar:
            for _ in range(steps):
                xv, yv = next(val)
                a_opt.zero_grad(set_to_none=True)
                loss_fn(net(xv), yv).backward()
                a_opt.step()
                xb, yb = next(train)
                w_opt.zero_grad(set_to_none=True)
                loss = loss_fn(net(xb), yb)
                loss.backward()
                w_opt.step()
            history.append({"epoch": epoch, "train_loss": float(loss.detach()),
                            "structure_probabilities": net.edge_probabilities()})
            bar.set_postfix(loss=f"{float(loss.detach()):.4g}")
        return DartsResult(net, history, time.perf_counter() - start)


def train_network(net: nn.Module, x: Tensor, y: Tensor, task: str, *, epochs: int = 100,
                  batch_size: int = 128, lr: float = 3e-3, weight_decay: float = 1e-4,
                  seed: int = 0, progress: bool = False) -> list[float]:
    """Train ``net`` on (x, y) for a fixed number of epochs with Adam; returns per-epoch losses.

    A cosine learning-rate decay to 0 makes the result insensitive to the exact epoch count.
    """
    torch.manual_seed(seed)
    loss_fn = task_loss(task)
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        return []
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sampler = MinibatchSampler(x, y, batch_size, torch.Generator().manual_seed(seed))
    steps = max(1, math.ceil(sampler.num_data / sampler.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps))
    losses = []
    net.train()
    for _ in tqdm(range(epochs), desc="retrain", disable=not progress, leave=False):
        total = 0.0
        for _ in range(steps):
            xb, yb = next(sampler)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        losses.append(total / steps)
    net.eval()
    return losses


def residual_std(net: nn.Module, x: Tensor, y: Tensor) -> float:
    """The maximum-likelihood noise level of a regression network on (x, y)."""
    with torch.no_grad():
        f = net(x)
        f = f.squeeze(-1) if f.dim() == 2 and f.shape[-1] == 1 else f
        return float((f - y).pow(2).mean().sqrt())


def parameter_free(space: SearchSpace, edge_name: str, label: str) -> bool:
    """True when the primitive ``label`` on edge ``edge_name`` is a skip (identity) or zero op."""
    e = space.edge_index(edge_name)
    prim = space.primitive_instances[e][space.edges[e].labels.index(label)]
    return bool(prim.is_zero or prim.is_identity)


def collapse_statistics(space: SearchSpace, structure: Mapping[str, str]) -> dict[str, Any]:
    """How much of a structure is skip/zero.

    Over the edges that offer at least one skip or zero primitive *and* at least one other:
    ``skip_zero_fraction`` is the fraction that chose skip or zero, ``collapsed`` is True when
    all of them did (the cell degenerates to a chain through the fixed edges).  ``disconnected``
    is True when no path of non-zero choices leads from the input to the output (the network's
    output does not depend on its input: chance-level accuracy).
    """
    offered = []
    for e, prims in zip(space.edges, space.primitive_instances):
        kinds = [p.is_zero or p.is_identity for p in prims]
        if any(kinds) and not all(kinds):
            offered.append(e.name)
    chosen = [n for n in offered if parameter_free(space, n, structure[n])]
    frac = len(chosen) / len(offered) if offered else 0.0
    live = set()
    for e, prims in zip(space.edges, space.primitive_instances):
        if not prims[e.labels.index(structure[e.name])].is_zero:
            live.add((e.source, e.target))
    reached, stack = {space.input}, [space.input]
    while stack:
        node = stack.pop()
        for src, dst in live:
            if src == node and dst not in reached:
                reached.add(dst)
                stack.append(dst)
    return {"edges_with_skip_or_zero": offered, "chose_skip_or_zero": chosen,
            "skip_zero_fraction": frac, "collapsed": bool(offered) and len(chosen) == len(offered),
            "disconnected": space.output not in reached}


__all__ = ["DartsResult", "DartsSearch", "PointSupernet", "collapse_statistics",
           "discrete_network", "parameter_free", "residual_std", "task_loss", "train_network"]

"""A plain DARTS-style baseline search (for fair comparisons).

:class:`DartsSearch` learns a :class:`~bnas_pyro.training.PointSupernet` (point weights, mixing
weights ``gamma^e = softmax(alpha^e)``; Liu, Simonyan, Yang 2019, "DARTS") by first-order
alternating updates: one step on alpha with the loss of a *validation* minibatch, then one step on
the weights with the loss of a *training* minibatch.  The found structure is ``argmax alpha`` per
edge (over all primitives, including ``zero``/``none``, the same rule as the Bayesian search's
argmax of q, so the two are comparable on the same space).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from bnas_pyro.inference import MinibatchSampler
from bnas_pyro.search_space import SearchSpace
from bnas_pyro.training import PointSupernet, task_loss


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


__all__ = ["DartsResult", "DartsSearch"]

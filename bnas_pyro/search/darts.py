"""A plain DARTS-style baseline search (for fair comparisons).

:class:`DartsSearch` learns a :class:`~bnas_pyro.training.PointSupernet` (point weights, mixing
weights ``gamma^e = softmax(alpha^e)``; Liu, Simonyan, Yang 2019, "DARTS") by first-order
alternating updates: one step on alpha with the loss of a *validation* minibatch, then one step on
the weights with the loss of a *training* minibatch.  The found structure follows DARTS's own
derivation rule (section 2.4 of the paper): on every edge the strongest operation,
``softmax(alpha^e)``, among the *non-zero* candidates (``derivation="darts"``, the default;
``top_k`` adds the rule's per-node edge pruning).  ``derivation="argmax"`` takes ``argmax alpha``
over all primitives, ``zero``/``none`` included (the Bayesian search's rule for q); with a short
search it can pick ``zero`` on every edge and cut the output off the input.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from bnas_pyro.inference import MinibatchSampler
from bnas_pyro.optimisers import adam
from bnas_pyro.search_space import SearchSpace
from bnas_pyro.training import PointSupernet, task_loss


@dataclass
class DartsResult:
    """What :class:`DartsSearch` returns: the supernet, its structure and the alpha history.

    ``structure`` is derived by ``derivation`` (see the module doc); ``argmax_structure`` is
    argmax alpha over all primitives, whatever ``derivation`` says.
    """

    network: PointSupernet
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_time: float = 0.0
    derivation: Literal["darts", "argmax"] = "darts"
    top_k: int | None = None

    @property
    def structure(self) -> dict[str, str]:
        if self.derivation == "argmax":
            return self.network.structure
        return self.network.derive(exclude_zero=True, top_k=self.top_k)

    @property
    def argmax_structure(self) -> dict[str, str]:
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
        derivation: ``"darts"`` (default: the strongest non-zero operation per edge, DARTS's
            own rule) or ``"argmax"`` (argmax alpha over all primitives, zero included).
        top_k: with ``"darts"``, keep only the ``top_k`` strongest incoming edges per node
            (DARTS: 2 in convolutional cells); ``None`` (default) keeps every edge.
    """

    def __init__(self, space: SearchSpace, task: str = "classification", *, epochs: int = 50,
                 batch_size: int = 128, lr: float = 1e-2, weight_decay: float = 1e-4,
                 arch_lr: float = 3e-3, arch_weight_decay: float = 1e-3, seed: int = 0,
                 progress: bool = False, derivation: Literal["darts", "argmax"] = "darts",
                 top_k: int | None = None):
        if derivation not in ("darts", "argmax"):
            raise ValueError(f"derivation must be 'darts' or 'argmax', got {derivation!r}")
        if top_k is not None and (derivation != "darts" or int(top_k) < 1):
            raise ValueError(f"top_k={top_k!r} needs derivation='darts' and top_k >= 1")
        self.derivation, self.top_k = derivation, None if top_k is None else int(top_k)
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
        w_opt = adam(net.weight_parameters(), lr=self.lr, weight_decay=self.weight_decay)
        a_opt = adam(net.arch_parameters(), lr=self.arch_lr, betas=(0.5, 0.999),
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
        return DartsResult(net, history, time.perf_counter() - start, self.derivation, self.top_k)


__all__ = ["DartsResult", "DartsSearch"]

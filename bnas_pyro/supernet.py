"""The supernet forward pass f(x; W, Gamma) (METHOD.md section 1), with no probability in it.

    f_0(x) = x,    f_j(x) = sum_{k in Adj(j)} sum_l gamma^{j,k}_l g^{j,k}_l(f_k(x); w^{j,k}_l)

All parameters W of all (edge, primitive) pairs live in one flat vector of length
:attr:`ParameterLayout.num_parameters`; :class:`ParameterLayout` says where each pair's
tensors sit and which *group* g = (edge, primitive) each scalar belongs to.  The cost of a
forward pass is one call per (edge, primitive) pair: linear in their number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from bnas_pyro.search_space import SearchSpace


@dataclass(frozen=True)
class ParameterSlot:
    """One named parameter tensor of one (edge, primitive) pair inside the flat vector."""

    edge: int
    primitive: int
    name: str
    start: int
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def stop(self) -> int:
        return self.start + self.size


class ParameterLayout:
    """Where every parameter sits in the flat weight vector W, and its group.

    Groups are the (edge, primitive) pairs in edge order then primitive order:
    ``group_offsets[e] + l`` is the group of primitive ``l`` on edge ``e``.  A group-level
    precision A_g is shared by all scalars of that pair (METHOD.md section 2: A diagonal, one
    value per group or, with ARD, per parameter).
    """

    def __init__(self, space: SearchSpace):
        self.slots: list[ParameterSlot] = []
        self.group_offsets: list[int] = []
        self.group_labels: list[tuple[str, str]] = []
        group_of_scalar: list[int] = []
        init_std: list[float] = []
        start = 0
        for e, (edge, prims) in enumerate(zip(space.edges, space.primitive_instances)):
            self.group_offsets.append(len(self.group_labels))
            for l, (spec, prim) in enumerate(zip(edge.primitives, prims)):
                g = len(self.group_labels)
                self.group_labels.append((edge.name, spec.label))
                for name, shape in prim.parameter_shapes.items():
                    slot = ParameterSlot(e, l, name, start, tuple(shape))
                    self.slots.append(slot)
                    group_of_scalar += [g] * slot.size
                    init_std += [prim.init_std(name)] * slot.size
                    start = slot.stop
        self.num_parameters = start
        self.num_groups = len(self.group_labels)
        self.edge_sizes = [len(e) for e in space.edges]
        self.group_index = torch.tensor(group_of_scalar, dtype=torch.long)
        self.init_std = torch.tensor(init_std)

    def group_sizes(self) -> Tensor:
        """Number of scalar parameters in each group (0 for parameter-free primitives)."""
        return torch.bincount(self.group_index, minlength=self.num_groups)

    def slots_of(self, edge: int, primitive: int) -> list[ParameterSlot]:
        return [s for s in self.slots if s.edge == edge and s.primitive == primitive]

    def unflatten(self, weights: Tensor, edge: int, primitive: int) -> dict[str, Tensor]:
        return {s.name: weights[s.start:s.stop].view(s.shape)
                for s in self.slots_of(edge, primitive)}


class Supernet(nn.Module):
    """Computes the output node f_out(x) for flat weights W and per-edge mixing weights gamma.

    ``gammas[e]`` is a tensor of shape ``(K_e,)`` on the simplex, or ``None`` for an edge with a
    single primitive (gamma = 1).  ``x`` has shape ``(batch, *input_size)``.
    """

    def __init__(self, space: SearchSpace):
        super().__init__()
        self.space = space
        self.layout = ParameterLayout(space)
        self.register_buffer("group_index", self.layout.group_index, persistent=False)
        # precomputed plan: for every non-input node, its incoming (edge, source, primitive calls)
        self._plan = []
        for node in space.order:
            if node == space.input:
                continue
            calls = []
            for e in space.incoming(node):
                edge = space.edges[e]
                for l, prim in enumerate(space.primitive_instances[e]):
                    if prim.is_zero:
                        continue
                    slots = tuple((s.name, s.start, s.stop, s.shape)
                                  for s in self.layout.slots_of(e, l))
                    calls.append((e, edge.source, l, prim, slots))
            self._plan.append((node, calls))

    @property
    def num_parameters(self) -> int:
        return self.layout.num_parameters

    def forward(self, x: Tensor, weights: Tensor, gammas: Sequence[Tensor | None]) -> Tensor:
        values = {self.space.input: x}
        for node, calls in self._plan:
            total = None
            for e, source, l, prim, slots in calls:
                params = {name: weights[a:b].view(shape) for name, a, b, shape in slots}
                out = prim(values[source], params)
                gamma = gammas[e]
                if gamma is not None:
                    out = gamma[l] * out
                total = out if total is None else total + out
            if total is None:  # every incoming primitive is "zero"
                total = x.new_zeros(x.shape[:1] + self.space.node_shape(node))
            values[node] = total
        return values[self.space.output]

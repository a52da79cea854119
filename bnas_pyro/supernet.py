"""The supernet forward pass f(x; W, Gamma) (METHOD.md section 1), with no probability in it.

    f_0(x) = x,    f_j(x) = sum_{k in Adj(j)} sum_l gamma^{j,k}_l g^{j,k}_l(f_k(x); w^{j,k}_l)

All parameters W of all (edge, primitive) pairs live in one flat vector of length
:attr:`ParameterLayout.num_parameters`; :class:`ParameterLayout` says where each pair's
tensors sit and which *group* g = (edge, primitive) each scalar belongs to.  The cost of a
forward pass is linear in the number of (edge, primitive) pairs; the built-in dense primitives
of all edges leaving a node are fused into one matmul (see :class:`Supernet`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from bnas_pyro.primitives.dense import Affine, Identity, Linear, ReluLinear, TanhLinear
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


def _fusable(prim) -> bool:
    """Affine primitives whose computation the supernet may fuse: exactly ``act(x W + b)``."""
    return (type(prim) in _FUSED_ACTIVATIONS and prim.bias
            and type(prim).forward is Affine.forward)


#: the built-in affine primitives and their activation (``None``: the identity)
_FUSED_ACTIVATIONS = {Linear: None, TanhLinear: torch.tanh, ReluLinear: torch.relu}
#: the mixing kind of the identity pairs of a block (they pass the source node itself); a
#: string, so that it survives pickling
_IDENTITY = "identity"


class _Block:
    """The pairs of one source node with one output width, and how they are mixed.

    Rows of the fused pre-activation ``z^T`` (features x batch) hold the affine pairs ordered by
    activation then (edge, primitive); ``kinds`` lists ``(activation, first row, last row)``.
    ``identities`` identity pairs follow.  ``groups[i]`` is the gamma group of pair ``i`` and
    ``targets[i]`` the position of its target node in ``target_nodes``.  Into one target the
    mixture sum_i gamma_i out_i of a kind is one gemv; into several, each pair's rows are scaled
    by its gamma and added to its own target's, so the mixing costs one multiply-add per pair
    and no dense (targets x pairs) matrix.
    """

    def __init__(self, width, kinds, identities, groups, target_nodes, targets):
        self.width = width
        self.kinds = kinds
        self.identities = identities
        self.groups = torch.tensor(groups, dtype=torch.long)
        self.target_nodes = target_nodes
        self.targets = torch.tensor(targets, dtype=torch.long)
        # the mixing, one entry per kind: (activation, first column, count, ordered), where
        # ``ordered`` says that the kind's rows go to the targets 0, 1, ... in turn
        self.mixing, column = [], 0
        for act, first, last in kinds:
            count = (last - first) // width
            self.mixing.append((act, column, count, targets[column:column + count]
                                == list(range(len(target_nodes)))))
            column += count
        if identities:
            self.mixing.append((_IDENTITY, column, identities, targets[column:]
                                == list(range(len(target_nodes)))))


class Supernet(nn.Module):
    """Computes the output node f_out(x) for flat weights W and per-edge mixing weights gamma.

    ``gammas[e]`` is a tensor of shape ``(K_e,)`` on the simplex, or ``None`` for an edge with a
    single primitive (gamma = 1).  ``x`` has shape ``(batch, *input_size)``.

    Vector nodes are held feature-major (``(features, batch)``).  The built-in affine primitives
    (``linear``, ``tanh``, ``relu``) of all edges leaving one node are fused into one matmul
    ``[W ...]^T h^T + [b ...]``, each activation is applied once over all of them, and the
    mixtures sum_l gamma_l g_l into the target nodes take one operation per activation kind
    (:class:`_Block`), on the activations in place, never copied into one block; ``identity``
    joins that sum and ``zero`` costs nothing. Any other primitive is called on its own. The
    cost stays linear in the number of (edge, primitive) pairs, with a few tensor operations per
    node instead of a few per pair.
    """

    def __init__(self, space: SearchSpace):
        super().__init__()
        self.space = space
        self.layout = ParameterLayout(space)
        self.register_buffer("group_index", self.layout.group_index, persistent=False)
        layout = self.layout
        slot_number = {(s.edge, s.primitive, s.name): i for i, s in enumerate(layout.slots)}
        self._slot_sizes = [s.size for s in layout.slots]
        self._slot_shapes = [s.shape for s in layout.slots]
        self._vector = {n: isinstance(space.nodes[n], int) for n in space.order}
        # the plan, per node: the primitive calls into it that are not fused, and the fused
        # computation of the edges leaving it
        self._generic: dict[str, list] = {n: [] for n in space.order}
        self._fused: dict[str, tuple] = {}
        self._kind_rows: dict[str, list[int]] = {}
        self._fused_shapes: dict[str, tuple[int, int]] = {}   # per node: (in, rows) of [W ...]
        fused_index: list[Tensor] = []
        for node in space.order:
            pairs = []   # (width, 0 affine | 1 identity, edge, primitive, prim, group)
            for e, edge in enumerate(space.edges):
                if edge.source != node:
                    continue
                vector = self._vector[edge.source] and self._vector[edge.target]
                for l, prim in enumerate(space.primitive_instances[e]):
                    if prim.is_zero:
                        continue
                    g = layout.group_offsets[e] + l
                    if vector and _fusable(prim):
                        pairs.append((prim.out_features, 0, e, l, prim, g))
                    elif vector and type(prim) is Identity:
                        pairs.append((prim.out_features, 1, e, l, prim, g))
                    else:
                        slots = [slot_number[(e, l, name)] for name in prim.parameter_shapes]
                        self._generic[edge.target].append((edge.source, prim, slots, g))
            if not pairs:
                continue
            blocks, weight_slots, bias_slots, rows = [], [], [], 0
            for width in sorted({p[0] for p in pairs}):
                mine = [p for p in pairs if p[0] == width]
                kinds, order = [], []
                for act in _FUSED_ACTIVATIONS.values():
                    members = [p for p in mine if p[1] == 0 and _FUSED_ACTIVATIONS[type(p[4])] is act]
                    if members:
                        kinds.append((act, rows, rows + width * len(members)))
                        rows += width * len(members)
                        order += members
                        weight_slots += [slot_number[(p[2], p[3], "weight")] for p in members]
                        bias_slots += [slot_number[(p[2], p[3], "bias")] for p in members]
                identities = [p for p in mine if p[1] == 1]
                order += identities
                target_nodes: list[str] = []
                for p in order:
                    if space.edges[p[2]].target not in target_nodes:
                        target_nodes.append(space.edges[p[2]].target)
                blocks.append(_Block(width, kinds, len(identities), [p[5] for p in order],
                                     target_nodes,
                                     [target_nodes.index(space.edges[p[2]].target) for p in order]))
            self._fused[node] = (blocks, weight_slots, bias_slots)
            if weight_slots:   # where [W ...]^T (rows x in, row-major) then [b ...] sit in W
                slots = [layout.slots[i] for i in weight_slots]
                n_in = slots[0].shape[0]
                columns = torch.cat([torch.arange(s.start, s.stop).view(s.shape) for s in slots], 1)
                biases = torch.cat([torch.arange(layout.slots[i].start, layout.slots[i].stop)
                                    for i in bias_slots])
                fused_index.append(torch.cat([columns.t().reshape(-1), biases]))
                self._fused_shapes[node] = (n_in, columns.shape[1])
            self._kind_rows[node] = [b_ - a for block in blocks for _, a, b_ in block.kinds]
        # the fused weights of every node gathered by one index_select
        self.register_buffer("_fused_index", torch.cat(fused_index) if fused_index
                             else torch.zeros(0, dtype=torch.long), persistent=False)
        self._fused_sizes = [m * (n_in + 1) for n_in, m in self._fused_shapes.values()]
        # the same split into [W ...] and [b ...] of every node, as one split
        self._fused_pieces = [size for n_in, m in self._fused_shapes.values()
                              for size in (n_in * m, m)]
        self._has_generic = any(self._generic.values())
        #: per node, the edges its value depends on (for
        #: :func:`bnas_pyro.supernet_structures.forward_structures`)
        self.edge_dependencies = _edge_dependencies(space)
        # the gammas of every mixed kind, in the order the forward pass uses them, gathered by
        # one index_select and split by kind
        mixed = [(block.groups[column:column + count], count)
                 for block in self._all_blocks() for _, column, count, _ in block.mixing]
        self.register_buffer("_mix_index", torch.cat([g for g, _ in mixed]) if mixed
                             else torch.zeros(0, dtype=torch.long), persistent=False)
        self._mix_counts = [c for _, c in mixed]
        for b, block in enumerate(self._all_blocks()):   # so that .to(device) moves them
            self.register_buffer(f"_block_groups_{b}", block.groups, persistent=False)
            self.register_buffer(f"_block_targets_{b}", block.targets, persistent=False)

    def _all_blocks(self):
        for blocks, *_ in self._fused.values():
            yield from blocks

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        for b, block in enumerate(self._all_blocks()):
            block.groups = getattr(self, f"_block_groups_{b}")
            block.targets = getattr(self, f"_block_targets_{b}")
        return out

    @property
    def num_parameters(self) -> int:
        return self.layout.num_parameters

    def group_gammas(self, gammas: Sequence[Tensor | None], like: Tensor) -> Tensor:
        """gamma per group (edge, primitive), shape ``(num_groups,)``: 1 on single-primitive edges."""
        one = like.new_ones(1)
        return torch.cat([one if g is None else g.reshape(-1) for g in gammas])

    def forward(self, x: Tensor, weights: Tensor, gammas: Sequence[Tensor | None]) -> Tensor:
        return self.forward_groups(x, weights, self.group_gammas(gammas, weights))

    def forward_groups(self, x: Tensor, weights: Tensor, gamma: Tensor) -> Tensor:
        """f_out(x) with ``gamma`` given per group (edge, primitive), shape ``(num_groups,)``."""
        space = self.space
        if weights.dim() != 1 or x.dim() != 1 + len(space.node_shape(space.input)):
            raise ValueError(f"the supernet takes flat weights (P,) and a batch x of shape (batch, "
                             f"{', '.join(map(str, space.node_shape(space.input)))}), got weights "
                             f"{tuple(weights.shape)} and x {tuple(x.shape)}")
        pieces = weights.split(self._slot_sizes) if self._has_generic else ()
        fused = (iter(weights.index_select(0, self._fused_index).split(self._fused_pieces))
                 if self._fused_sizes else iter(()))
        mix = (iter(gamma.index_select(0, self._mix_index).view(1, -1).split(self._mix_counts, 1))
               if self._mix_counts else iter(()))   # rows (1, count)
        batch = x.shape[0]
        totals: dict[str, list[Tensor]] = {}
        values: dict[str, Tensor] = {}   # vector nodes feature-major (features, batch)
        for node in space.order:
            vector = self._vector[node]
            if node == space.input:
                h = x.t() if vector else x
            else:
                parts = totals.pop(node, [])
                for source, prim, slots, g in self._generic[node]:
                    params = {name: pieces[i].view(self._slot_shapes[i])
                              for name, i in zip(prim.parameter_shapes, slots)}
                    inp = values[source].t() if self._vector[source] else values[source]
                    out = gamma[g] * prim(inp, params)
                    parts.append(out.t() if vector else out)
                if not parts:   # every incoming primitive is "zero"
                    shape = space.node_shape(node)
                    h = x.new_zeros(shape + (batch,) if vector else (batch,) + shape)
                else:
                    h = parts[0]
                    for p in parts[1:]:
                        h = h + p
            values[node] = h
            plan = self._fused.get(node)
            if plan is None:
                continue
            blocks, weight_slots, bias_slots = plan
            z = None
            if weight_slots:
                n_in, rows = self._fused_shapes[node]
                w, b = next(fused), next(fused)
                z = torch.addmm(b.view(rows, 1), w.view(rows, n_in), h)   # (rows, batch)
            # split, not slices: one backward node for all parts (a slice's backward fills a
            # zero tensor of the whole size)
            z_parts = iter(() if z is None else z.split(self._kind_rows[node]))
            for block in blocks:
                summed = None
                for act, column, count, ordered in block.mixing:
                    if act == _IDENTITY:
                        out = h.reshape(1, -1)   # every identity pair passes h itself
                    else:
                        out = next(z_parts)
                        out = (out if act is None else act(out)).view(count, -1)
                    g_k = next(mix)
                    if len(block.target_nodes) == 1:   # one target: sum_i gamma_i out_i, a gemv
                        piece = (g_k.sum(1, keepdim=True) if act == _IDENTITY else g_k) @ out
                    else:                               # row i goes to target targets[i]
                        piece = g_k.view(-1, 1) * out
                        if not ordered:
                            piece = piece.new_zeros(len(block.target_nodes), piece.shape[1]).index_add(
                                0, block.targets[column:column + count], piece)
                    summed = piece if summed is None else summed + piece
                if len(block.target_nodes) == 1:
                    totals.setdefault(block.target_nodes[0], []).append(
                        summed.view(block.width, batch))
                    continue
                summed = summed.view(len(block.target_nodes), block.width, batch)
                for target, part in zip(block.target_nodes, summed.unbind(0)):
                    totals.setdefault(target, []).append(part)
        out = values[space.output]
        return out.t() if self._vector[space.output] else out


def _edge_dependencies(space: SearchSpace) -> dict[str, list[int]]:
    """For every node, the edges its value depends on: those into it and, recursively, into their
    sources (sorted edge indices)."""
    deps: dict[str, set[int]] = {}
    for node in space.order:
        mine: set[int] = set()
        for e, edge in enumerate(space.edges):
            if edge.target == node:
                mine |= {e} | deps[edge.source]
        deps[node] = mine
    return {n: sorted(d) for n, d in deps.items()}

"""f(x; W, s) for many discrete structures s at once (METHOD.md section 1, gamma one-hot).

The bound of the structured guide (METHOD.md section 3) needs log p(y | X, W, s) for every
structure s of a joint q(s) in every step.  The value of node j under s depends only on the
choices of the edges into j and, recursively, into their sources (``edge_dependencies``), so node
j is computed once per distinct *context* (those choices and the weight row a structure reads),
not once per structure: with N hidden nodes in a cell the nodes near the input have a few contexts
and only the last ones up to S.

A :class:`StructurePlan` holds everything that depends only on the structures and weight rows
(the contexts of every node, which rows each context gathers), so a search whose support is
fixed (a joint q(s)) builds it once and every step is a short, fixed sequence of tensor
operations.  Spaces whose nodes are all vectors and whose primitives are the built-in affine ones,
``identity`` and ``zero`` take the *fused* plan: per source node one batched matmul over its
contexts for the affine pairs leaving it that some structure chooses (the supernet's fused
layout, pruned to them), the activations once per kind, and per (edge into j) one
``index_select`` from that node's bank of outputs.  A hidden node whose pairs out are all
``linear`` (the last node of an MLP cell, into y) is never formed: its affine maps run on its
sources' banks and the narrower results are gathered (:func:`_plan_linear_before_gather`).  Any
other space takes the generic plan: one call per (edge, primitive, weight row) on the source
contexts that need it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from bnas_pyro.supernet import _IDENTITY, Supernet


@dataclass
class _Bank:
    """The outputs of one fused block of one source node over all its contexts, in rows:
    per kept kind, row ``offset + context * count + pair`` (the pairs some structure chooses);
    identity rows ``offset + context``; the last row zero."""

    block: int
    kind_offsets: list[int]
    kind_counts: list[int]
    identity_offset: int | None
    zero_row: int


@dataclass
class _GenericCall:
    """One primitive call into a node: edge, primitive, weight row, the source contexts it reads
    and, per target context it feeds, which of those outputs it adds."""

    edge: int
    primitive: int
    row: int
    needed: Tensor
    positions: Tensor
    targets: Tensor


@dataclass
class StructurePlan:
    """The contexts of every node for fixed ``choices`` (S, E) and ``weight_rows`` (S,).

    ``contexts[node]``: how many distinct contexts the node has; ``context_rows[node]``: the
    weight row of each; ``output_index``: the output context of every structure.  ``fused``
    plans hold per node the bank rows each incoming edge gathers (``gathers``); generic plans the
    primitive calls (``calls``).
    """

    num_structures: int
    num_rows: int
    fused: bool
    contexts: dict[str, int]
    context_rows: dict[str, Tensor]
    output_index: Tensor
    banks: dict[tuple[str, int], _Bank] = field(default_factory=dict)
    gathers: dict[str, list[tuple[str, int, Tensor]]] = field(default_factory=dict)
    calls: dict[str, list[_GenericCall]] = field(default_factory=dict)
    device: torch.device = torch.device("cpu")
    #: fused plans: per source node the kept kinds of each block, [(block, [(act, count)])],
    #: the pre-activation rows of each kept non-identity kind, and (n_in, kept rows) of its
    #: matmul; where the kept rows of [W ...]^T and b sit in the flat W (one index for all
    #: nodes), and the sizes that split that gather into each node's [W ...]^T and [b ...]
    node_blocks: dict[str, list] = field(default_factory=dict)
    kind_rows: dict[str, list[int]] = field(default_factory=dict)
    fused_shapes: dict[str, tuple[int, int]] = field(default_factory=dict)
    fused_index: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    fused_sizes: list[int] = field(default_factory=list)
    #: fused plans: the nodes whose pairs out are all ``linear`` and whose affine maps are taken
    #: on their sources' banks, before the gather (:func:`_plan_linear_before_gather`)
    linear_before_gather: frozenset = frozenset()
    #: whether structure i's output context is context i (no gather of the outputs)
    output_in_order: bool = False

    def to(self, device: torch.device) -> "StructurePlan":
        """The plan with its index tensors on ``device``."""
        if torch.device(device) == self.device:
            return self
        move = (lambda t: t.to(device))
        return StructurePlan(
            self.num_structures, self.num_rows, self.fused, dict(self.contexts),
            {n: move(t) for n, t in self.context_rows.items()}, move(self.output_index),
            dict(self.banks),
            {n: [(k, b, move(t)) for k, b, t in g] for n, g in self.gathers.items()},
            {n: [_GenericCall(c.edge, c.primitive, c.row, move(c.needed), move(c.positions),
                              move(c.targets)) for c in cs] for n, cs in self.calls.items()},
            torch.device(device), dict(self.node_blocks), dict(self.kind_rows),
            dict(self.fused_shapes), move(self.fused_index), list(self.fused_sizes),
            self.linear_before_gather, self.output_in_order)


def fusable_space(supernet: Supernet) -> bool:
    """Every node a vector and every primitive fused by the supernet (affine, identity, zero)."""
    return (not any(supernet._generic.values())
            and all(supernet._vector[n] for n in supernet.space.order))


def plan_structures(supernet: Supernet, choices: Tensor,
                    weight_rows: Tensor | None = None) -> StructurePlan:
    """The :class:`StructurePlan` of ``choices`` (S, E) (the primitive of every edge of every
    structure) reading weight rows ``weight_rows`` (S,) (default: row 0 for all)."""
    space = supernet.space
    device = choices.device
    choices = choices.detach().to("cpu", torch.long)
    S, E = choices.shape
    if E != len(space.edges):
        raise ValueError(f"choices name a primitive for each of {E} edges; the space has "
                         f"{len(space.edges)}")
    rows = (torch.zeros(S, dtype=torch.long) if weight_rows is None
            else weight_rows.detach().to("cpu", torch.long))
    if rows.shape != (S,):
        raise ValueError(f"weight_rows must have one entry per structure ({S}), got shape "
                         f"{tuple(rows.shape)}")
    for e, prims in enumerate(space.primitive_instances):
        bad = (choices[:, e] < 0) | (choices[:, e] >= len(prims))
        if bool(bad.any()):
            s = int(bad.nonzero()[0])
            raise ValueError(f"structure {s} chooses primitive {int(choices[s, e])} on edge "
                             f"{space.edges[e].name}, which has {len(prims)}")
    keys = torch.cat([choices, rows[:, None]], 1)
    deps = supernet.edge_dependencies
    context: dict[str, Tensor] = {}     # node -> context of every structure (S,)
    first: dict[str, Tensor] = {}       # node -> one structure per context
    for node in space.order:
        if node == space.input:
            context[node] = torch.zeros(S, dtype=torch.long)
            first[node] = torch.zeros(1, dtype=torch.long)
            continue
        _, inverse = torch.unique(keys[:, deps[node] + [E]], dim=0, return_inverse=True)
        n_ctx = int(inverse.max()) + 1 if S else 0
        context[node] = inverse
        first[node] = torch.full((n_ctx,), S, dtype=torch.long).scatter_reduce(
            0, inverse, torch.arange(S), "amin")
    # the input's one context reads every weight row: its "rows" are those of its consumers
    context_rows = {n: rows[first[n]] for n in space.order if n != space.input}
    num_rows = int(rows.max()) + 1 if S else 1
    plan = StructurePlan(S, num_rows, fusable_space(supernet),
                         {n: int(first[n].shape[0]) for n in space.order}, context_rows,
                         context[space.output],
                         output_in_order=bool(torch.equal(context[space.output], torch.arange(S))))
    if plan.fused:
        _plan_fused(supernet, plan, choices, context, first, rows)
    else:
        _plan_generic(supernet, plan, choices, context, first, rows)
    return plan.to(device)


def _plan_fused(supernet, plan, choices, context, first, rows) -> None:
    """Banks of the pairs some structure chooses (the others are not computed), and per node the
    bank rows each incoming edge gathers."""
    space, layout = supernet.space, supernet.layout
    used = {layout.group_offsets[e] + l for e in range(choices.shape[1])
            for l in torch.unique(choices[:, e]).tolist()
            if not space.primitive_instances[e][l].is_zero}
    # the node's slice of the supernet's fused index: [W^T (rows x n_in), b (rows)]
    node_index, start = {}, 0
    for node, size in zip(supernet._fused_shapes, supernet._fused_sizes):
        node_index[node] = supernet._fused_index[start:start + size]
        start += size
    where: dict[int, tuple[int, int | None, int]] = {}   # group -> (block, kept kind, pair)
    fused_index = []
    for node, (blocks, _, _) in supernet._fused.items():
        # the input node has one context per weight row (its pre-activations differ by row)
        n_ctx = plan.contexts[node] * (plan.num_rows if node == space.input else 1)
        kept_rows: list[int] = []
        node_blocks, kind_rows = [], []
        for b, block in enumerate(blocks):
            kinds = iter(block.kinds)
            entries, offsets, counts, identity, row = [], [], [], None, 0
            for act, column, count, _ in block.mixing:
                groups = [int(block.groups[column + i]) for i in range(count)]
                if act == _IDENTITY:
                    if any(g in used for g in groups):
                        for g in groups:
                            where[g] = (b, None, 0)
                        identity, row = row, row + n_ctx
                        entries.append((_IDENTITY, 1))
                    continue
                _, first_row, _ = next(kinds)
                keep = [i for i, g in enumerate(groups) if g in used]
                if not keep:
                    continue
                for j, i in enumerate(keep):
                    where[groups[i]] = (b, len(offsets), j)
                    a = first_row + i * block.width
                    kept_rows += range(a, a + block.width)
                offsets.append(row)
                counts.append(len(keep))
                row += n_ctx * len(keep)
                entries.append((act, len(keep)))
                kind_rows.append(len(keep) * block.width)
            if entries:
                plan.banks[(node, b)] = _Bank(b, offsets, counts, identity, row)
                node_blocks.append((b, entries))
        plan.node_blocks[node] = node_blocks
        plan.kind_rows[node] = kind_rows
        if kept_rows:
            n_in, all_rows = supernet._fused_shapes[node]
            index = node_index[node]
            kept = torch.tensor(kept_rows, dtype=torch.long, device=index.device)
            matrix = index[:all_rows * n_in].view(all_rows, n_in).index_select(0, kept)
            fused_index.append(torch.cat([matrix.reshape(-1), index[all_rows * n_in:][kept]]))
            plan.fused_shapes[node] = (n_in, len(kept_rows))
            plan.fused_sizes += [len(kept_rows) * n_in, len(kept_rows)]   # [W ...]^T, [b ...]
    if fused_index:
        plan.fused_index = torch.cat(fused_index).cpu()
    input_context = torch.arange(plan.num_rows)
    for node in space.order:
        if node == space.input:
            continue
        rep = first[node]
        gathers = []
        for e, edge in enumerate(space.edges):
            if edge.target != node:
                continue
            src = edge.source
            chosen = choices[rep, e]
            src_ctx = (input_context[rows[rep]] if src == space.input else context[src][rep])
            index = torch.empty(rep.shape[0], dtype=torch.long)
            block = None
            for c in range(rep.shape[0]):
                prim = space.primitive_instances[e][int(chosen[c])]
                if prim.is_zero:
                    index[c] = -1
                    continue
                b, kind, i = where[layout.group_offsets[e] + int(chosen[c])]
                block = b if block is None else block
                bank = plan.banks[(src, b)]
                index[c] = (bank.identity_offset + src_ctx[c] if kind is None
                            else bank.kind_offsets[kind] + src_ctx[c] * bank.kind_counts[kind] + i)
            if block is None:   # every context takes "zero" on this edge
                continue
            index[index < 0] = plan.banks[(src, block)].zero_row
            gathers.append((src, block, index))
        plan.gathers[node] = gathers
    plan.linear_before_gather = _plan_linear_before_gather(supernet, plan)


def _plan_linear_before_gather(supernet, plan) -> frozenset:
    """The hidden nodes j whose kept pairs out are all ``linear`` (no activation, no identity),
    where the affine map is cheaper taken on the source banks than on j's contexts.

    Node j's value in context c is sum_e bank_e[i_e(c)], so a linear pair out of j gives
    W^T h_j(c) + b = sum_e (W^T bank_e)[i_e(c)] + b: the matmul runs over the bank rows (B of
    them) instead of the C contexts, and the gathers move ``rows`` values per context instead of
    j's width.  Counting multiply-adds and moved values, that wins when
    B n_in rows + 2 G C rows <= C n_in (2 G - 1 + rows) for G incoming gathers (with one weight
    row only: contexts reading different rows would need each bank under each row's W).
    """
    space = supernet.space
    chosen = set()
    for node, (n_in, rows) in plan.fused_shapes.items():
        if node in (space.input, space.output) or not plan.gathers.get(node):
            continue
        entries = [entry for _, kept in plan.node_blocks[node] for entry in kept]
        if any(act is not None for act, _ in entries):   # an activation or an identity pair
            continue
        gathers = plan.gathers[node]
        C, G = plan.contexts[node], len(gathers)
        B = sum(plan.banks[(src, block)].zero_row + 1 for src, block, _ in gathers)
        if B * n_in * rows + 2 * G * C * rows <= C * n_in * (2 * G - 1 + rows):
            chosen.add(node)
    return frozenset(chosen)


def _plan_generic(supernet, plan, choices, context, first, rows) -> None:
    space = supernet.space
    for node in space.order:
        if node == space.input:
            continue
        rep = first[node]
        calls = []
        for e, edge in enumerate(space.edges):
            if edge.target != node:
                continue
            chosen = choices[rep, e]
            src_ctx = context[edge.source][rep]
            row = rows[rep]
            for l, prim in enumerate(space.primitive_instances[e]):
                if prim.is_zero:
                    continue
                for r in torch.unique(row[chosen == l]).tolist():
                    targets = ((chosen == l) & (row == r)).nonzero()[:, 0]
                    needed, pos = torch.unique(src_ctx[targets], return_inverse=True)
                    calls.append(_GenericCall(e, l, int(r), needed, pos, targets))
        plan.calls[node] = calls


def forward_structures(supernet: Supernet, x: Tensor, weights: Tensor,
                       choices: Tensor | None = None,
                       weight_rows: Tensor | None = None,
                       plan: StructurePlan | None = None) -> Tensor:
    """f(x; W, s) for every discrete structure s (row of ``choices``, (S, E): the primitive of
    every edge), shape (S, batch, *out), with the computation shared between structures (module
    docstring).  ``weights`` is one flat W (P,) or several (R, P) with ``weight_rows`` (S,)
    saying which row each structure reads (rows that differ only in their gradient, e.g.
    preconditioned copies, keep their own contexts).  ``plan`` (from :func:`plan_structures`)
    replaces ``choices`` and ``weight_rows`` where the same structures are evaluated often.
    Equal, to rounding, to ``supernet(x, W_r, one_hot(s))`` per structure.
    """
    if plan is None:
        if choices is None:
            raise ValueError("forward_structures needs choices or a plan")
        plan = plan_structures(supernet, choices, weight_rows)
    plan = plan.to(x.device)
    if weights.dim() == 1:
        weights = weights.unsqueeze(0)
    if weights.shape[0] < plan.num_rows:
        raise ValueError(f"the structures read weight rows up to {plan.num_rows - 1}; got "
                         f"{weights.shape[0]} rows")
    if weights.shape[0] > plan.num_rows:   # rows no structure reads are not computed
        weights = weights[:plan.num_rows]
    if plan.fused:
        return _forward_fused(supernet, plan, x, weights)
    return _forward_generic(supernet, plan, x, weights)


def _forward_fused(supernet: Supernet, plan: StructurePlan, x: Tensor, weights: Tensor) -> Tensor:
    """Vector nodes held as (contexts, features, batch)."""
    space = supernet.space
    batch = x.shape[0]
    R = plan.num_rows
    # every node's [W ...]^T and [b ...] as pieces of one split (split, not slices: a slice's
    # backward fills a zero tensor of the whole size)
    fused = (iter(weights.index_select(1, plan.fused_index).split(plan.fused_sizes, 1))
             if plan.fused_sizes else iter(()))
    banks: dict[tuple[str, int], Tensor] = {}
    out = None
    for node in space.order:
        if R == 1 and node in plan.linear_before_gather:
            n_in, rows = plan.fused_shapes[node]
            w, b = next(fused).view(rows, n_in), next(fused)
            z = None
            for src, block, index in plan.gathers[node]:
                bank = banks[(src, block)]                       # (bank rows, n_in, batch)
                part = torch.bmm(w.expand(bank.shape[0], -1, -1), bank).index_select(0, index)
                z = part if z is None else z + part
            z = z + b.view(1, rows, 1)                           # (contexts, rows, batch)
            _bank_outputs(supernet, plan, node, banks, z, None, z.shape[0], batch)
            continue
        if node == space.input:
            x_t = x.t()
            h = x_t.unsqueeze(0)                                 # (1, in, batch)
        else:
            h = None
            for src, block, index in plan.gathers[node]:
                part = banks[(src, block)].index_select(0, index)
                h = part if h is None else h + part
            if h is None:   # every incoming primitive is "zero" in every context
                h = x.new_zeros(plan.contexts[node], space.nodes[node], batch)
        if node == space.output:
            out = h
        if not plan.node_blocks.get(node):
            continue
        z = None
        if node in plan.fused_shapes:
            n_in, rows = plan.fused_shapes[node]
            w, b = next(fused), next(fused)                      # (R, rows * n_in), (R, rows)
            if R == 1:
                w = w.view(rows, n_in)
                if node == space.input:
                    z = torch.addmm(b.view(rows, 1), w, x_t).unsqueeze(0)
                else:   # bmm on the expanded W: no copy (a broadcast matmul transposes h)
                    z = torch.bmm(w.expand(h.shape[0], -1, -1), h) + b.view(1, rows, 1)
            elif node == space.input:                            # one context per weight row
                z = torch.baddbmm(b.unsqueeze(-1), w.view(R, rows, n_in), h.expand(R, -1, -1))
            else:
                r = plan.context_rows[node]
                z = torch.baddbmm(b.index_select(0, r).unsqueeze(-1),
                                  w.view(R, rows, n_in).index_select(0, r), h)
        n_ctx = h.shape[0] if node != space.input else R
        h_rows = h.expand(n_ctx, -1, -1) if node == space.input else h
        _bank_outputs(supernet, plan, node, banks, z, h_rows, n_ctx, batch)
    if not plan.output_in_order:
        out = out.index_select(0, plan.output_index)
    return out.transpose(1, 2)


def _bank_outputs(supernet: Supernet, plan: StructurePlan, node: str, banks: dict,
                  z: Tensor | None, h_rows: Tensor | None, n_ctx: int, batch: int) -> None:
    """The banks of ``node``'s blocks from its pre-activations ``z`` (contexts, kept rows, batch)
    and, for identity pairs, its value ``h_rows`` (contexts, width, batch)."""
    pieces = iter(() if z is None else z.split(plan.kind_rows[node], 1))
    blocks = supernet._fused[node][0]
    like = z if z is not None else h_rows
    for b_index, entries in plan.node_blocks[node]:
        width = blocks[b_index].width
        parts = []
        for act, count in entries:
            if act == _IDENTITY:
                parts.append(h_rows)
                continue
            piece = next(pieces)
            piece = piece if act is None else act(piece)
            parts.append(piece.reshape(n_ctx * count, width, batch))
        parts.append(like.new_zeros(1, width, batch))
        banks[(node, b_index)] = torch.cat(parts, 0)


def _forward_generic(supernet: Supernet, plan: StructurePlan, x: Tensor, weights: Tensor) -> Tensor:
    """Nodes held as (contexts, batch, *shape); one call per (edge, primitive, weight row)."""
    space, layout = supernet.space, supernet.layout
    batch = x.shape[0]
    values: dict[str, Tensor] = {}
    for node in space.order:
        if node == space.input:
            values[node] = x.unsqueeze(0)
            continue
        total = None
        for call in plan.calls[node]:
            prim = space.primitive_instances[call.edge][call.primitive]
            inp = values[space.edges[call.edge].source].index_select(0, call.needed)
            params = layout.unflatten(weights[call.row], call.edge, call.primitive)
            out = prim(inp.reshape(-1, *inp.shape[2:]), params)
            out = out.reshape(call.needed.shape[0], batch, *out.shape[1:]).index_select(
                0, call.positions)
            if total is None:
                total = out.new_zeros(plan.contexts[node], *out.shape[1:])
            total = total.index_add(0, call.targets, out)
        if total is None:   # every incoming primitive is "zero" in every context
            total = x.new_zeros(plan.contexts[node], batch, *space.node_shape(node))
        values[node] = total
    return values[space.output].index_select(0, plan.output_index)

"""How much of a discrete structure is skip or zero, and whether the input still reaches the
output: the failure modes of a structure search (DARTS's collapse onto parameter-free
operations, a network whose output no longer depends on its input).
"""

from __future__ import annotations

from typing import Any, Mapping

from bnas_pyro.search_space import SearchSpace


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


__all__ = ["collapse_statistics", "parameter_free"]

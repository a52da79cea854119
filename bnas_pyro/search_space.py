"""What can be chosen: the graph (V, E) and the primitives on each edge (METHOD.md section 1).

:class:`SearchSpace` knows nothing of probability.  It validates the graph and the primitive
lists at construction, with errors that name the offending edge, node or primitive, and
round-trips through plain dicts / JSON.

Example::

    space = SearchSpace(
        nodes={"x": 64, "h1": 64, "h2": 64, "y": 10},
        edges=[("x", "h1", ["linear", "tanh", "relu"]),
               ("h1", "h2", ["tanh", "relu", "identity"]),
               ("x", "h2", ["linear", "zero"]),
               ("h2", "y", ["linear"])],
    )
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from math import prod
from typing import Any, Iterable, Mapping, Sequence, Union

from bnas_pyro.primitives import Primitive, build_primitive

NodeSize = Union[int, tuple[int, ...]]


class SearchSpaceError(ValueError):
    """A search space that cannot be built; the message names the culprit."""


@dataclass(frozen=True)
class PrimitiveSpec:
    """A primitive by registry name plus its options, e.g. ``PrimitiveSpec("poly", {"degree": 3})``."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if not self.options:
            return self.name
        args = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.name}({args})"

    @classmethod
    def parse(cls, spec: "str | Mapping[str, Any] | PrimitiveSpec") -> "PrimitiveSpec":
        if isinstance(spec, PrimitiveSpec):
            return spec
        if isinstance(spec, str):
            return cls(spec, {})
        if isinstance(spec, Mapping):
            if "name" not in spec:
                raise SearchSpaceError(f"primitive spec {dict(spec)!r} has no 'name'")
            options = {k: v for k, v in spec.items() if k != "name"}
            return cls(str(spec["name"]), options)
        raise SearchSpaceError(f"cannot read a primitive from {spec!r}")

    def to_dict(self) -> "str | dict[str, Any]":
        return self.name if not self.options else {"name": self.name, **self.options}


@dataclass(frozen=True)
class Edge:
    """Edge (source -> target) with its candidate primitives, in order."""

    source: str
    target: str
    primitives: tuple[PrimitiveSpec, ...]

    @property
    def name(self) -> str:
        return f"{self.source}->{self.target}"

    @property
    def labels(self) -> list[str]:
        return [p.label for p in self.primitives]

    def __len__(self) -> int:
        return len(self.primitives)


class SearchSpace:
    """A DAG of nodes with feature sizes; each edge carries a non-empty list of primitives.

    ``input`` defaults to the first node, ``output`` to the last.  Node ``j`` computes
    ``f_j = sum_{(k, j) in E} sum_l gamma^{j,k}_l g^{j,k}_l(f_k)``; there are
    ``prod_e K_e`` discrete structures (:attr:`num_structures`).
    """

    def __init__(
        self,
        nodes: "Mapping[str, NodeSize] | Sequence[tuple[str, NodeSize]]",
        edges: Iterable["Edge | Sequence[Any] | Mapping[str, Any]"],
        input: str | None = None,
        output: str | None = None,
    ):
        items = list(nodes.items()) if isinstance(nodes, Mapping) else [tuple(n) for n in nodes]
        if not items:
            raise SearchSpaceError("a search space needs at least an input and an output node")
        self.nodes: dict[str, NodeSize] = {}
        for name, size in items:
            if name in self.nodes:
                raise SearchSpaceError(f"node {name!r} is declared twice")
            self.nodes[str(name)] = _check_size(name, size)
        self.input = input if input is not None else items[0][0]
        self.output = output if output is not None else items[-1][0]
        for role, name in (("input", self.input), ("output", self.output)):
            if name not in self.nodes:
                raise SearchSpaceError(f"{role} node {name!r} is not among the nodes")
        if self.input == self.output:
            raise SearchSpaceError(f"input and output are the same node {self.input!r}")
        self.edges: tuple[Edge, ...] = tuple(self._parse_edge(e) for e in edges)
        if not self.edges:
            raise SearchSpaceError("a search space needs at least one edge")
        self._validate_graph()
        self.order: tuple[str, ...] = self._topological_order()
        self.primitive_instances: tuple[tuple[Primitive, ...], ...] = tuple(
            self._build_edge(e) for e in self.edges
        )

    # ------------------------------------------------------------------ construction
    def _parse_edge(self, raw: Any) -> Edge:
        if isinstance(raw, Edge):
            source, target, prims = raw.source, raw.target, raw.primitives
        elif isinstance(raw, Mapping):
            missing = {"source", "target", "primitives"} - set(raw)
            if missing:
                raise SearchSpaceError(f"edge {dict(raw)!r} lacks {sorted(missing)}")
            source, target, prims = raw["source"], raw["target"], raw["primitives"]
        else:
            try:
                source, target, prims = raw
            except (TypeError, ValueError):
                raise SearchSpaceError(
                    f"edge {raw!r} must be (source, target, primitives) or a dict"
                ) from None
        name = f"{source}->{target}"
        for end in (source, target):
            if end not in self.nodes:
                raise SearchSpaceError(f"edge {name}: node {end!r} is not declared")
        if source == target:
            raise SearchSpaceError(f"edge {name} is a self-loop (a cycle)")
        if isinstance(prims, (str, Mapping)):
            prims = [prims]
        specs = tuple(PrimitiveSpec.parse(p) for p in prims)
        if not specs:
            raise SearchSpaceError(f"edge {name} has an empty primitive list")
        labels = [p.label for p in specs]
        if len(set(labels)) != len(labels):
            raise SearchSpaceError(f"edge {name} lists a primitive twice: {labels}")
        return Edge(str(source), str(target), specs)

    def _validate_graph(self) -> None:
        seen: set[tuple[str, str]] = set()
        for e in self.edges:
            if (e.source, e.target) in seen:
                raise SearchSpaceError(f"edge {e.name} is declared twice")
            seen.add((e.source, e.target))
        for e in self.edges:
            if e.target == self.input:
                raise SearchSpaceError(f"edge {e.name} points into the input node {self.input!r}")
        forward = _reachable(self.input, self.edges, downstream=True)
        backward = _reachable(self.output, self.edges, downstream=False)
        # cycles: depth-first search reporting the edge that closes one
        colour: dict[str, int] = {n: 0 for n in self.nodes}
        out_edges: dict[str, list[Edge]] = {n: [] for n in self.nodes}
        for e in self.edges:
            out_edges[e.source].append(e)

        def visit(node: str) -> None:
            colour[node] = 1
            for e in out_edges[node]:
                if colour[e.target] == 1:
                    raise SearchSpaceError(f"the graph has a cycle through edge {e.name}")
                if colour[e.target] == 0:
                    visit(e.target)
            colour[node] = 2

        for n in self.nodes:
            if colour[n] == 0:
                visit(n)
        for n in self.nodes:
            if n not in forward:
                raise SearchSpaceError(f"node {n!r} is not reachable from the input {self.input!r}")
            if n not in backward:
                raise SearchSpaceError(f"node {n!r} does not reach the output {self.output!r}")

    def _topological_order(self) -> tuple[str, ...]:
        indegree = {n: 0 for n in self.nodes}
        for e in self.edges:
            indegree[e.target] += 1
        order, ready = [], [n for n in self.nodes if indegree[n] == 0]
        while ready:
            n = ready.pop(0)
            order.append(n)
            for e in self.edges:
                if e.source == n:
                    indegree[e.target] -= 1
                    if indegree[e.target] == 0:
                        ready.append(e.target)
        return tuple(order)

    def _build_edge(self, edge: Edge) -> tuple[Primitive, ...]:
        made = []
        for spec in edge.primitives:
            try:
                made.append(build_primitive(spec.name, self.nodes[edge.source],
                                            self.nodes[edge.target], **spec.options))
            except KeyError as err:
                raise SearchSpaceError(f"edge {edge.name}: {err.args[0]}") from None
            except (ValueError, TypeError) as err:
                raise SearchSpaceError(
                    f"edge {edge.name}, primitive {spec.label!r}: {err}"
                ) from None
        return tuple(made)

    # ------------------------------------------------------------------ queries
    def node_shape(self, node: str) -> tuple[int, ...]:
        """The shape of one value of ``node``: ``(d,)`` for a vector node, ``(C, H, W)`` for an
        image node."""
        size = self.nodes[node]
        return tuple(size) if isinstance(size, tuple) else (size,)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input (of the input node), e.g. ``(64,)`` or ``(1, 8, 8)``."""
        return self.node_shape(self.input)

    @property
    def num_structures(self) -> int:
        return prod(len(e) for e in self.edges)

    @property
    def edge_names(self) -> list[str]:
        return [e.name for e in self.edges]

    def incoming(self, node: str) -> list[int]:
        return [i for i, e in enumerate(self.edges) if e.target == node]

    def edge_index(self, name: str) -> int:
        for i, e in enumerate(self.edges):
            if e.name == name:
                return i
        raise KeyError(f"no edge named {name!r}; edges: {self.edge_names}")

    def restrict(self, choice: Mapping[str, "str | Sequence[str]"]) -> "SearchSpace":
        """The sub-space keeping, on each named edge, only the chosen primitive label(s)."""
        edges = []
        for e in self.edges:
            keep = choice.get(e.name, e.labels)
            keep = [keep] if isinstance(keep, str) else list(keep)
            unknown = set(keep) - set(e.labels)
            if unknown:
                raise SearchSpaceError(f"edge {e.name} has no primitive {sorted(unknown)}")
            edges.append(Edge(e.source, e.target,
                              tuple(p for p in e.primitives if p.label in keep)))
        return SearchSpace(self.nodes, edges, self.input, self.output)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": {n: (list(s) if isinstance(s, tuple) else s) for n, s in self.nodes.items()},
            "edges": [{"source": e.source, "target": e.target,
                       "primitives": [p.to_dict() for p in e.primitives]} for e in self.edges],
            "input": self.input,
            "output": self.output,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SearchSpace":
        unknown = set(data) - {"nodes", "edges", "input", "output"}
        if unknown:
            raise SearchSpaceError(f"unknown search-space keys: {sorted(unknown)}")
        for key in ("nodes", "edges"):
            if key not in data:
                raise SearchSpaceError(f"search-space dict lacks {key!r}")
        nodes = data["nodes"]
        if isinstance(nodes, Mapping):
            nodes = {k: (tuple(v) if isinstance(v, list) else v) for k, v in nodes.items()}
        return cls(nodes, data["edges"], data.get("input"), data.get("output"))

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> "SearchSpace":
        return cls.from_dict(json.loads(text))

    def __repr__(self) -> str:
        edges = ", ".join(f"{e.name}:{e.labels}" for e in self.edges)
        return f"SearchSpace({len(self.nodes)} nodes, {edges})"


def _check_size(name: str, size: Any) -> NodeSize:
    if isinstance(size, (list, tuple)):
        if not size or not all(isinstance(s, int) and s > 0 for s in size):
            raise SearchSpaceError(f"node {name!r}: size {size!r} must be positive integers")
        return tuple(size)
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise SearchSpaceError(f"node {name!r}: size {size!r} must be a positive integer")
    return size


def _reachable(start: str, edges: Sequence[Edge], downstream: bool) -> set[str]:
    seen, stack = {start}, [start]
    while stack:
        node = stack.pop()
        for e in edges:
            here, there = (e.source, e.target) if downstream else (e.target, e.source)
            if here == node and there not in seen:
                seen.add(there)
                stack.append(there)
    return seen

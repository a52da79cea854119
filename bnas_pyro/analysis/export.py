"""The derived architecture: one discrete structure as a plain ``torch.nn.Module``, and its JSON.

A search ends with q(W, Gamma).  Choosing a vertex of every simplex (one primitive per kept
edge, see :meth:`bnas_pyro.analysis.result.SearchResult.select`) and the posterior means E_q[W] gives the
network

    f_0(x) = x,    f_j(x) = sum_{(k, j) kept} g^{k,j}_{l(k,j)}(f_k(x); E_q[w^{k,j}_{l(k,j)}]),

which is the supernet of METHOD.md section 1 at gamma = the one-hot vectors of the choice (gamma = 0
on dropped edges).  :class:`DerivedNetwork` computes it with ordinary ``nn.Parameter`` values, so it
can be retrained with any torch optimiser; :func:`network_to_dict` / :func:`network_from_dict`
(and the ``*_json`` / :func:`save_network` / :func:`load_network` helpers) store and rebuild it
exactly: floats are written with Python's shortest round-trip repr, so a loaded network gives the
same predictions bit for bit.  Primitives are rebuilt by registry name
(:func:`bnas_pyro.primitives.build_primitive`): a custom primitive must be registered before
loading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from bnas_pyro.primitives import Primitive, build_primitive
from bnas_pyro.search_space import PrimitiveSpec

FORMAT = "bnas-pyro.derived-network"
VERSION = 1

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
           "bfloat16": torch.bfloat16}


def primitive_module(primitive: Primitive, params: Mapping[str, Tensor]) -> nn.Module:
    """A trainable ``nn.Module`` computing ``primitive`` with ``params`` (copied):
    :meth:`Primitive.to_module` (for a wrapped ``nn.Module``, a copy of that module)."""
    return primitive.to_module(params)


class DerivedNetwork(nn.Module):
    """A network of one discrete structure (METHOD.md section 1 at a vertex of every simplex).

    Args:
        nodes: node name -> feature size (int or shape tuple), as in :class:`SearchSpace`.
        input, output: the input and output node names.
        edges: ``(source, target, spec, module)`` for every kept edge, ``module`` mapping
            ``(batch, size(source))`` to ``(batch, size(target))``.
        metadata: anything worth keeping with the network (structure, probability, ...).

    Node j computes the sum of its kept incoming edges; a node without one is 0.
    """

    def __init__(self, nodes: Mapping[str, Any], input: str, output: str,
                 edges: Sequence[tuple[str, str, PrimitiveSpec, nn.Module]],
                 metadata: Mapping[str, Any] | None = None):
        super().__init__()
        self.nodes = {str(k): (tuple(v) if isinstance(v, (list, tuple)) else int(v))
                      for k, v in nodes.items()}
        self.input, self.output = input, output
        for name in (input, output):
            if name not in self.nodes:
                raise ValueError(f"node {name!r} is not among the nodes {sorted(self.nodes)}")
        self.edge_specs: list[tuple[str, str, PrimitiveSpec]] = []
        self.ops = nn.ModuleList()
        for source, target, spec, module in edges:
            for end in (source, target):
                if end not in self.nodes:
                    raise ValueError(f"edge {source}->{target}: node {end!r} is not declared")
            self.edge_specs.append((source, target, PrimitiveSpec.parse(spec)))
            self.ops.append(module)
        self.order = _topological_order(list(self.nodes), [(s, t) for s, t, _ in self.edge_specs],
                                        input)
        self.metadata: dict[str, Any] = dict(metadata or {})

    @property
    def structure(self) -> dict[str, str]:
        """Edge name -> the primitive label it keeps."""
        return {f"{s}->{t}": spec.label for s, t, spec in self.edge_specs}

    def forward(self, x: Tensor) -> Tensor:
        values: dict[str, Tensor] = {self.input: x}
        for node in self.order:
            if node == self.input:
                continue
            total = None
            for (source, target, _), op in zip(self.edge_specs, self.ops):
                if target != node or source not in values:
                    continue
                out = op(values[source])
                total = out if total is None else total + out
            if total is None:
                size = self.nodes[node]
                size = size if isinstance(size, tuple) else (size,)
                total = x.new_zeros(x.shape[:1] + size)
            values[node] = total
        return values[self.output]

    def extra_repr(self) -> str:
        return ", ".join(f"{s}->{t}: {spec.label}" for s, t, spec in self.edge_specs)


def _topological_order(nodes: list[str], edges: list[tuple[str, str]], input: str) -> list[str]:
    indegree = {n: 0 for n in nodes}
    for _, t in edges:
        indegree[t] += 1
    ready = [n for n in nodes if indegree[n] == 0]
    ready.sort(key=lambda n: n != input)
    order = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for s, t in edges:
            if s == n:
                indegree[t] -= 1
                if indegree[t] == 0:
                    ready.append(t)
    if len(order) != len(nodes):
        raise ValueError("the derived network's edges form a cycle")
    return order


def build_network(space, choice: Mapping[str, str | None], weights: Tensor,
                  metadata: Mapping[str, Any] | None = None) -> DerivedNetwork:
    """The :class:`DerivedNetwork` of ``choice`` (edge name -> primitive label, or ``None`` to
    drop the edge) in ``space``, with the flat weight vector ``weights`` (e.g. E_q[W]).

    Edges not named in ``choice`` are dropped; a "zero" primitive drops its edge.
    """
    from bnas_pyro.supernet import ParameterLayout

    layout = ParameterLayout(space)
    weights = weights.detach()
    edges = []
    for e, edge in enumerate(space.edges):
        label = choice.get(edge.name)
        if label is None:
            continue
        if label not in edge.labels:
            raise ValueError(f"edge {edge.name} has no primitive {label!r}; it has {edge.labels}")
        l = edge.labels.index(label)
        prim = space.primitive_instances[e][l]
        if prim.is_zero:
            continue
        params = {k: v.clone() for k, v in layout.unflatten(weights, e, l).items()}
        edges.append((edge.source, edge.target, edge.primitives[l], primitive_module(prim, params)))
    net = DerivedNetwork(space.nodes, space.input, space.output, edges, metadata)
    return net.to(device=weights.device, dtype=weights.dtype if weights.is_floating_point() else None)


# ---------------------------------------------------------------------------- serialisation
def _tensor_to_json(t: Tensor) -> dict[str, Any]:
    t = t.detach().cpu()
    return {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
            "data": t.reshape(-1).tolist()}


def _tensor_from_json(d: Mapping[str, Any], device=None) -> Tensor:
    dtype = _DTYPES.get(d.get("dtype", "float32"), None)
    if dtype is None:
        dtype = getattr(torch, d["dtype"])
    return torch.tensor(d["data"], dtype=dtype, device=device).reshape(d["shape"])


def network_to_dict(net: DerivedNetwork) -> dict[str, Any]:
    """A JSON-ready dict that :func:`network_from_dict` turns back into the same network."""
    edges = []
    for (source, target, spec), op in zip(net.edge_specs, net.ops):
        edges.append({"source": source, "target": target, "primitive": spec.to_dict(),
                      "state": {k: _tensor_to_json(v) for k, v in op.state_dict().items()}})
    return {
        "format": FORMAT, "version": VERSION,
        "nodes": {n: (list(s) if isinstance(s, tuple) else s) for n, s in net.nodes.items()},
        "input": net.input, "output": net.output,
        "edges": edges,
        "metadata": jsonable(net.metadata),
    }


def network_from_dict(data: Mapping[str, Any], device: "torch.device | str | None" = None
                      ) -> DerivedNetwork:
    """Rebuild a :class:`DerivedNetwork` from :func:`network_to_dict`'s output (or from a search
    result's JSON, whose ``"network"`` entry it is)."""
    if "network" in data and "edges" not in data:
        data = data["network"]
    if data.get("format") != FORMAT:
        raise ValueError(f"not a derived network (format {data.get('format')!r}, expected {FORMAT!r})")
    if int(data.get("version", 0)) > VERSION:
        raise ValueError(f"derived-network version {data['version']} is newer than this "
                         f"library's {VERSION}")
    nodes = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data["nodes"].items()}
    edges = []
    for item in data["edges"]:
        spec = PrimitiveSpec.parse(item["primitive"])
        prim = build_primitive(spec.name, nodes[item["source"]], nodes[item["target"]],
                               **dict(spec.options))
        state = {k: _tensor_from_json(v, device) for k, v in item["state"].items()}
        dtype = next(iter(state.values())).dtype if state else torch.get_default_dtype()
        params = {name: torch.zeros(shape, dtype=dtype, device=device)
                  for name, shape in prim.parameter_shapes.items()}
        module = primitive_module(prim, params).to(dtype=dtype)
        module.load_state_dict(state)
        edges.append((item["source"], item["target"], spec, module))
    net = DerivedNetwork(nodes, data["input"], data["output"], edges, data.get("metadata"))
    return net if device is None else net.to(device)


def network_to_json(net: DerivedNetwork, **kwargs: Any) -> str:
    return json.dumps(network_to_dict(net), **kwargs)


def network_from_json(text: str, device: "torch.device | str | None" = None) -> DerivedNetwork:
    return network_from_dict(json.loads(text), device)


def save_network(net: DerivedNetwork, path: "str | Path") -> Path:
    path = Path(path)
    path.write_text(network_to_json(net, indent=1))
    return path


def load_network(source: "str | Path | Mapping[str, Any]",
                 device: "torch.device | str | None" = None) -> DerivedNetwork:
    """Rebuild a network from a JSON file path, a JSON string or an already parsed dict
    (a network dict or a :meth:`SearchResult.to_dict` with its ``"network"``)."""
    if isinstance(source, Mapping):
        return network_from_dict(source, device)
    text = str(source)
    if text.lstrip().startswith("{"):
        return network_from_json(text, device)
    return network_from_json(Path(source).read_text(), device)


def jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if torch.is_tensor(value):
        return value.detach().cpu().tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


__all__ = [
    "DerivedNetwork", "FORMAT", "build_network", "load_network", "network_from_dict",
    "network_from_json", "network_to_dict", "network_to_json", "primitive_module", "save_network",
]

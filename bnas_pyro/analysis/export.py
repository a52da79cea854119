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

The network is self-contained: :meth:`DerivedNetwork.set_preprocessing` gives it the input
standardisation z = (x - x_mean) / x_std fitted on the training split, the target scaling
y = f * y_std + y_mean of a regression and the class names, so ``net(raw_x)`` takes the
features as the file had them and :meth:`DerivedNetwork.predict` answers in the file's units and
labels.  Format version 2 stores them (``"preprocessing"``); a version-1 file, which has no
such entry, is refused (its predictions on raw features would be silently wrong) unless
``legacy=True`` asks for the bare network on standardised inputs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from bnas_pyro.atomic_files import write_text
from bnas_pyro.primitives import Primitive, build_primitive
from bnas_pyro.search_space import PrimitiveSpec

FORMAT = "bnas-pyro.derived-network"
VERSION = 2

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

    Node j computes the sum of its kept incoming edges; a node without one is 0.  With
    preprocessing set (:meth:`set_preprocessing`), ``forward`` is
    ``f((x - x_mean) / x_std) * y_std + y_mean`` (the scaling of the output for a regression
    only) and :meth:`core` is the bare ``f`` on standardised inputs.
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
        self.register_buffer("x_mean", None)
        self.register_buffer("x_std", None)
        self.task: str | None = None
        self.y_mean, self.y_std = 0.0, 1.0
        self.class_names: list | None = None

    # ------------------------------------------------------------------ preprocessing
    def set_preprocessing(self, task: str | None = None, x_mean: Tensor | None = None,
                          x_std: Tensor | None = None, y_mean: float = 0.0, y_std: float = 1.0,
                          class_names: Sequence | None = None) -> "DerivedNetwork":
        """Carry the data's standardisation (kept in float64, the statistics as fitted), the
        regression target's scaling and the class names; returns ``self``."""
        if task not in (None, "classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        if (x_mean is None) != (x_std is None):
            raise ValueError("give both x_mean and x_std, or neither")
        if x_mean is not None:
            x_mean = torch.as_tensor(x_mean, dtype=torch.float64)
            x_std = torch.as_tensor(x_std, dtype=torch.float64)
            if not (torch.isfinite(x_mean).all() and torch.isfinite(x_std).all()
                    and (x_std > 0).all()):
                raise ValueError("x_mean must be finite and x_std finite and > 0")
            device = next((p.device for p in self.parameters()), x_mean.device)
            x_mean, x_std = x_mean.to(device), x_std.to(device)
        self.x_mean, self.x_std = x_mean, x_std
        if not (math.isfinite(y_mean) and math.isfinite(y_std) and y_std > 0):
            raise ValueError(f"y_mean must be finite and y_std > 0, got {y_mean}, {y_std}")
        if task == "classification" and (y_mean, y_std) != (0.0, 1.0):
            raise ValueError("a classifier has no target scaling")
        self.task, self.y_mean, self.y_std = task, float(y_mean), float(y_std)
        if class_names is not None:
            class_names = [c.item() if hasattr(c, "item") else c for c in class_names]
            size = self.nodes[self.output]
            if task != "classification" or not isinstance(size, int) or len(class_names) != size:
                raise ValueError(f"{len(class_names)} class names for an output of size {size} "
                                 f"(task {task!r})")
        self.class_names = None if class_names is None else list(class_names)
        return self

    def set_preprocessing_from(self, data: Any) -> "DerivedNetwork":
        """:meth:`set_preprocessing` with a :class:`bnas_pyro.data.SplitData`'s statistics."""
        return self.set_preprocessing(data.task, data.x_mean, data.x_std, data.y_mean,
                                      data.y_std, data.class_names)

    @property
    def preprocessing(self) -> dict[str, Any]:
        """The preprocessing as a JSON-ready dict (``network.json``'s ``"preprocessing"``)."""
        return {"task": self.task,
                "x_mean": None if self.x_mean is None else _tensor_to_json(self.x_mean),
                "x_std": None if self.x_std is None else _tensor_to_json(self.x_std),
                "y_mean": self.y_mean, "y_std": self.y_std, "class_names": self.class_names}

    def _standardize(self, x: Tensor) -> Tensor:
        size = self.nodes[self.input]
        expected = size if isinstance(size, tuple) else (size,)
        if tuple(x.shape[1:]) != expected:
            what = "columns" if len(expected) == 1 else "shape"
            got = x.shape[1] if len(expected) == 1 and x.dim() == 2 else tuple(x.shape[1:])
            raise ValueError(f"the network expects inputs of {what} "
                             f"{expected[0] if len(expected) == 1 else expected} per row, got "
                             f"{got} (input of shape {tuple(x.shape)})")
        dtype = next((p.dtype for p in self.parameters()), x.dtype if x.is_floating_point()
                     else torch.get_default_dtype())
        if self.x_mean is None:
            return x.to(dtype)
        z = (x.to(device=self.x_mean.device, dtype=torch.float64) - self.x_mean) / self.x_std
        return z.to(dtype)

    def forward(self, x: Tensor) -> Tensor:
        out = self.core(self._standardize(x))
        if self.task == "regression" and (self.y_mean, self.y_std) != (0.0, 1.0):
            out = out * self.y_std + self.y_mean
        return out

    @torch.no_grad()
    def predict_proba(self, x: Any) -> Tensor:
        """Class probabilities softmax(f(x)) of raw inputs ``x`` (a classifier only)."""
        if self.task == "regression":
            raise ValueError("predict_proba: this network is a regression")
        return torch.softmax(self(torch.as_tensor(x)), dim=-1)

    @torch.no_grad()
    def predict(self, x: Any) -> "list | Tensor":
        """Predictions for raw inputs ``x``: the class names (or indices) for a classifier, the
        values in the target's units for a regression."""
        out = self(torch.as_tensor(x))
        if self.task == "classification":
            idx = out.argmax(-1)
            return idx if self.class_names is None else [self.class_names[i] for i in idx.tolist()]
        return out.squeeze(-1) if out.dim() > 1 and out.shape[-1] == 1 else out

    @property
    def structure(self) -> dict[str, str]:
        """Edge name -> the primitive label it keeps."""
        return {f"{s}->{t}": spec.label for s, t, spec in self.edge_specs}

    def core(self, x: Tensor) -> Tensor:
        """f(x) on standardised inputs (no preprocessing)."""
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
        "preprocessing": net.preprocessing,
        "metadata": jsonable(net.metadata),
    }


class NetworkFileError(ValueError):
    """A derived-network JSON that cannot be loaded; the message names the file and the entry."""


def network_from_dict(data: Mapping[str, Any], device: "torch.device | str | None" = None,
                      legacy: bool = False, source: str = "the network") -> DerivedNetwork:
    """Rebuild a :class:`DerivedNetwork` from :func:`network_to_dict`'s output (or from a search
    result's JSON, whose ``"network"`` entry it is).

    Refused, with the offending entry named: another format, a newer version, a version-1 file
    without preprocessing (unless ``legacy``: the bare network on standardised inputs), an edge
    to an undeclared node, a missing or non-finite weight.  ``source`` names the file in errors.
    """
    def fail(message: str) -> NetworkFileError:
        return NetworkFileError(f"{source}: {message}")

    if not isinstance(data, Mapping):
        raise fail(f"expected a JSON object, got {type(data).__name__}")
    if "network" in data and "edges" not in data:
        data = data["network"]
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, Mapping) else None
        raise fail(f"not a derived network (format {got!r}, expected {FORMAT!r})")
    version = int(data.get("version", 0))
    if version > VERSION:
        raise fail(f"derived-network version {version} is newer than this library's {VERSION}")
    if "preprocessing" not in data and not legacy:
        raise fail(f"derived-network version {version} stores no input standardisation, target "
                   f"scaling or class names, so its predictions on raw features would be wrong; "
                   f"re-run the search to export a self-contained network (version {VERSION}), "
                   f"or load it with load_network(..., legacy=True) to get the network on "
                   f"standardised inputs")
    for key in ("nodes", "input", "output", "edges"):
        if key not in data:
            raise fail(f"no {key!r} entry")
    nodes = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data["nodes"].items()}
    edges = []
    for i, item in enumerate(data["edges"]):
        source_node, target_node = item.get("source"), item.get("target")
        name = f"edge {i} ({source_node}->{target_node})"
        for end in (source_node, target_node):
            if end not in nodes:
                raise fail(f"{name}: node {end!r} is not declared (nodes: {', '.join(nodes)})")
        spec = PrimitiveSpec.parse(item["primitive"])
        prim = build_primitive(spec.name, nodes[source_node], nodes[target_node],
                               **dict(spec.options))
        state = {}
        for key, value in item.get("state", {}).items():
            try:
                tensor = _tensor_from_json(value, device)
            except (KeyError, TypeError, ValueError, RuntimeError) as err:
                raise fail(f"{name}, {spec.label} weight {key!r}: unreadable ({err})") from None
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                bad = int((~torch.isfinite(tensor)).sum())
                raise fail(f"{name}, {spec.label} weight {key!r}: {bad} non-finite value(s) "
                           f"(NaN or inf); the network cannot predict")
            state[key] = tensor
        dtype = next(iter(state.values())).dtype if state else torch.get_default_dtype()
        params = {pname: torch.zeros(shape, dtype=dtype, device=device)
                  for pname, shape in prim.parameter_shapes.items()}
        module = primitive_module(prim, params).to(dtype=dtype)
        try:
            module.load_state_dict(state)
        except RuntimeError as err:
            raise fail(f"{name}, {spec.label}: the weights do not fit the primitive ({err})"
                       ) from None
        edges.append((source_node, target_node, spec, module))
    try:
        net = DerivedNetwork(nodes, data["input"], data["output"], edges, data.get("metadata"))
    except ValueError as err:
        raise fail(str(err)) from None
    pre = data.get("preprocessing")
    if pre:
        try:
            net.set_preprocessing(
                pre.get("task"),
                None if pre.get("x_mean") is None else _tensor_from_json(pre["x_mean"]),
                None if pre.get("x_std") is None else _tensor_from_json(pre["x_std"]),
                pre.get("y_mean", 0.0), pre.get("y_std", 1.0), pre.get("class_names"))
        except (KeyError, TypeError, ValueError) as err:
            raise fail(f"preprocessing: {err}") from None
    return net if device is None else net.to(device)


def network_to_json(net: DerivedNetwork, **kwargs: Any) -> str:
    return json.dumps(network_to_dict(net), **kwargs)


def network_from_json(text: str, device: "torch.device | str | None" = None,
                      legacy: bool = False, source: str = "the network JSON") -> DerivedNetwork:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise NetworkFileError(f"{source}: not valid JSON ({err}); a truncated or damaged "
                               f"file?") from None
    return network_from_dict(data, device, legacy=legacy, source=source)


def save_network(net: DerivedNetwork, path: "str | Path") -> Path:
    """Write ``net`` as JSON to ``path`` atomically (a temporary file, fsync, rename: a failed
    write names the path and leaves an earlier file there intact)."""
    return write_text(Path(path), network_to_json(net, indent=1))


def load_network(source: "str | Path | Mapping[str, Any]",
                 device: "torch.device | str | None" = None, legacy: bool = False
                 ) -> DerivedNetwork:
    """Rebuild a network from a JSON file path, a JSON string or an already parsed dict
    (a network dict or a :meth:`SearchResult.to_dict` with its ``"network"``).

    The network takes raw features (it carries its standardisation); errors name the file.
    ``legacy=True`` loads a version-1 file, which has no preprocessing, as the bare network.
    """
    if isinstance(source, Mapping):
        return network_from_dict(source, device, legacy=legacy)
    text = str(source)
    if text.lstrip().startswith("{"):
        return network_from_json(text, device, legacy=legacy)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such network file")
    return network_from_json(path.read_text(), device, legacy=legacy, source=str(path))


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
    "DerivedNetwork", "FORMAT", "NetworkFileError", "VERSION", "build_network", "load_network", "network_from_dict",
    "network_from_json", "network_to_dict", "network_to_json", "primitive_module", "save_network",
]

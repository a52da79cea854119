"""Built-in search spaces: a multi-node MLP cell for tabular data and a small DARTS-like
convolutional cell for 1x8x8 digit images.  Both train on a 2-core CPU in minutes.

MLP cell (``mlp_cell``), with ``nodes = N`` hidden nodes h1..hN of width ``hidden``::

    x  -> h1          input primitives            (default relu, tanh, linear)
    x  -> hj, j >= 2  input primitives + zero
    hi -> hj, i < j   hidden primitives           (default relu, tanh, identity, zero)
    hi -> y,  i < N   linear, zero
    hN -> y           linear                       (so the output is never cut off)

With N = 2 there are 3 * 4 * 4 * 2 = 96 discrete structures.

Convolutional cell (``conv_cell``), on images ``(C_in, H, W)`` with ``channels = C``::

    x    -> stem      conv_3x3 (fixed: C_in -> C channels)
    stem -> nj        cell operations
    ni   -> nj, i<j   cell operations
    ni   -> y,  i<N   head, none
    nN   -> y         head (flatten_linear by default, or gap_linear)

Cell operations default to DARTS's list without separable convolutions: conv_3x3, conv_5x5,
dil_conv_3x3, max_pool_3x3, avg_pool_3x3, skip_connect, none; with N = 2 that is
7^3 * 2 = 686 structures.  Every operation keeps H x W (stride 1), so no reduction cell is needed
on 8x8 inputs.

:func:`build_space` makes a space by name for a :class:`~bnas_pyro.data.SplitData`, reading the
input and output sizes from it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from bnas_pyro.registry import Registry
from bnas_pyro.search_space import SearchSpace, SearchSpaceError

MLP_INPUT_PRIMITIVES = ("relu", "tanh", "linear")
MLP_HIDDEN_PRIMITIVES = ("relu", "tanh", "identity", "zero")
CONV_CELL_PRIMITIVES = ("conv_3x3", "conv_5x5", "dil_conv_3x3", "max_pool_3x3", "avg_pool_3x3",
                        "skip_connect", "none")


def mlp_cell_space(n_inputs: int, n_outputs: int, hidden: int = 64, nodes: int = 2,
                   input_primitives: Sequence[Any] = MLP_INPUT_PRIMITIVES,
                   hidden_primitives: Sequence[Any] = MLP_HIDDEN_PRIMITIVES,
                   output_primitives: Sequence[Any] = ("linear", "zero")) -> SearchSpace:
    """The multi-node MLP cell described in the module docstring."""
    if nodes < 1:
        raise SearchSpaceError(f"mlp_cell needs nodes >= 1, got {nodes}")
    hidden_names = [f"h{j}" for j in range(1, nodes + 1)]
    sizes: dict[str, Any] = {"x": int(n_inputs)}
    sizes.update({h: int(hidden) for h in hidden_names})
    sizes["y"] = int(n_outputs)
    edges: list[tuple[str, str, list[Any]]] = []
    for j, h in enumerate(hidden_names):
        edges.append(("x", h, list(input_primitives) + ([] if j == 0 else ["zero"])))
        for g in hidden_names[:j]:
            edges.append((g, h, list(hidden_primitives)))
    for j, h in enumerate(hidden_names):
        last = j == len(hidden_names) - 1
        edges.append((h, "y", ["linear"] if last else list(output_primitives)))
    return SearchSpace(sizes, edges, input="x", output="y")


def conv_cell_space(input_shape: Sequence[int] = (1, 8, 8), n_classes: int = 10, channels: int = 8,
                    nodes: int = 2, primitives: Sequence[Any] = CONV_CELL_PRIMITIVES,
                    head: str = "flatten_linear") -> SearchSpace:
    """The small DARTS-like convolutional cell described in the module docstring."""
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3:
        raise SearchSpaceError(f"conv_cell needs image inputs (C, H, W), got input shape {input_shape}")
    if nodes < 1:
        raise SearchSpaceError(f"conv_cell needs nodes >= 1, got {nodes}")
    if head not in ("flatten_linear", "gap_linear"):
        raise SearchSpaceError(f"conv_cell head must be 'flatten_linear' or 'gap_linear', got {head!r}")
    _, h, w = input_shape
    cell = (int(channels), h, w)
    names = [f"n{j}" for j in range(1, nodes + 1)]
    sizes: dict[str, Any] = {"x": input_shape, "stem": cell}
    sizes.update({n: cell for n in names})
    sizes["y"] = int(n_classes)
    edges: list[tuple[str, str, list[Any]]] = [("x", "stem", ["conv_3x3"])]
    for j, n in enumerate(names):
        for src in ["stem"] + names[:j]:
            edges.append((src, n, list(primitives)))
    for j, n in enumerate(names):
        last = j == len(names) - 1
        edges.append((n, "y", [head] if last else [head, "none"]))
    return SearchSpace(sizes, edges, input="x", output="y")


SpaceFactory = Callable[..., SearchSpace]


def _mlp_for(data, **options) -> SearchSpace:
    if len(data.input_shape) != 1:
        raise SearchSpaceError(f"mlp_cell needs vector inputs; data set {data.name!r} has input "
                               f"shape {data.input_shape} (use conv_cell, or the vector version)")
    return mlp_cell_space(data.input_shape[0], data.output_size, **options)


def _conv_for(data, **options) -> SearchSpace:
    if len(data.input_shape) != 3:
        raise SearchSpaceError(f"conv_cell needs image inputs (C, H, W); data set {data.name!r} "
                               f"has input shape {data.input_shape} (try digits_images)")
    return conv_cell_space(data.input_shape, data.output_size, **options)


#: every search space by name: (factory(data, **options), one-line description)
SPACES: Registry[tuple[SpaceFactory, str]] = Registry("search space")


def register_space(name: str, factory: SpaceFactory, description: str = "",
                   overwrite: bool = False) -> None:
    """Register ``factory(data, **options) -> SearchSpace`` under ``name``."""
    SPACES.register(name, (factory, description), overwrite=overwrite)


register_space("mlp_cell", _mlp_for, "multi-node MLP cell for tabular data (options: hidden, "
               "nodes, input_primitives, hidden_primitives, output_primitives)")
register_space("conv_cell", _conv_for, "DARTS-like convolutional cell for images (options: "
               "channels, nodes, primitives, head)")


def available_spaces() -> dict[str, str]:
    """Registered space names and their one-line descriptions."""
    return {name: SPACES.get(name)[1] for name in SPACES.names()}


def build_space(name: str, data, **options) -> SearchSpace:
    """The space ``name`` sized for ``data`` (a :class:`~bnas_pyro.data.SplitData`)."""
    factory = SPACES.get(name)[0]
    return factory(data, **options)


__all__ = ["CONV_CELL_PRIMITIVES", "MLP_HIDDEN_PRIMITIVES", "MLP_INPUT_PRIMITIVES",
           "available_spaces", "build_space", "conv_cell_space", "mlp_cell_space", "register_space"]

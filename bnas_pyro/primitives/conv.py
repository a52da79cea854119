"""Convolutional primitives for image nodes of size ``(C, H, W)`` (METHOD.md section 1).

Functional :class:`~bnas_pyro.primitives.Primitive` subclasses, registered by name with
:func:`~bnas_pyro.primitives.register_primitive` under the DARTS operation names:

================  ==========================================================  ==============
name              g(x; w)                                                      sizes
================  ==========================================================  ==============
``conv_3x3``      relu(conv2d(x, W, b)), 3x3, padding 1                        (C,H,W)->(C',H,W)
``conv_5x5``      the same with a 5x5 kernel                                   (C,H,W)->(C',H,W)
``dil_conv_3x3``  3x3 kernel, dilation 2 (a 5x5 receptive field, 9 weights)   (C,H,W)->(C',H,W)
``max_pool_3x3``  3x3 max pooling, stride 1                                    (C,H,W)->(C,H,W)
``avg_pool_3x3``  3x3 average pooling, stride 1 (padding not counted)          (C,H,W)->(C,H,W)
``skip_connect``  x (identity)                                                 (C,H,W)->(C,H,W)
``none``          0                                                            any -> any
``gap_linear``    global average pooling, then a linear map                    (C,H,W)->n
``flatten_linear`` flatten, then a linear map                                  (C,H,W)->n
================  ==========================================================  ==============

Every spatial operation keeps H and W (stride 1, "same" padding), so any of them can sit on any
edge between two image nodes of equal spatial size.  The output node of a convolutional space is
a vector of class scores: reach it with ``gap_linear`` or ``flatten_linear``.  Batch dimensions
are ``(batch, C, H, W)``.  Importing :mod:`bnas_pyro.primitives` registers these names.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from .registry import Primitive, register_primitive

ImageSize = tuple[int, int, int]


def _image_size(size: "int | tuple[int, ...]", role: str, name: str) -> ImageSize:
    if isinstance(size, int) or len(size) != 3:
        raise ValueError(f"{name} needs an image {role} size (C, H, W), got {size!r}")
    return tuple(int(s) for s in size)  # type: ignore[return-value]


class ImagePrimitive(Primitive):
    """Base for primitives on image nodes: ``in_features`` / ``out_features`` are shape tuples."""

    op_name = "image"

    def __init__(self, in_features: "tuple[int, ...] | int", out_features: "tuple[int, ...] | int"):
        # Primitive.__init__ casts sizes to int; image sizes are tuples, so set them directly.
        self.in_features = _image_size(in_features, "input", self.op_name)
        self.out_features = out_features if isinstance(out_features, int) else tuple(out_features)

    def init_std(self, name: str) -> float:
        return 1.0 / math.sqrt(math.prod(self.in_features))

    def _same_spatial(self) -> None:
        out = _image_size(self.out_features, "output", self.op_name)
        if out[1:] != self.in_features[1:]:
            raise ValueError(f"{self.op_name} keeps H and W: input {self.in_features} and output "
                             f"{out} differ in spatial size")

    def _same_shape(self) -> None:
        out = self.out_features if isinstance(self.out_features, int) else tuple(self.out_features)
        if out != self.in_features:
            raise ValueError(f"{self.op_name} needs equal input and output sizes, got "
                             f"{self.in_features} -> {self.out_features}")


class Conv(ImagePrimitive):
    """``relu(conv2d(x, W, b))`` with stride 1 and "same" padding; He-initialised."""

    def __init__(self, in_features, out_features, kernel_size: int = 3, dilation: int = 1,
                 activation: bool = True):
        if int(kernel_size) != kernel_size or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
        if int(dilation) != dilation or dilation < 1:
            raise ValueError(f"dilation must be a positive integer, got {dilation!r}")
        self.kernel_size, self.dilation = int(kernel_size), int(dilation)
        self.op_name = (f"dil_conv_{kernel_size}x{kernel_size}" if dilation > 1
                        else f"conv_{kernel_size}x{kernel_size}")
        super().__init__(in_features, out_features)
        self._same_spatial()
        self.activation = bool(activation)
        self.padding = self.dilation * (self.kernel_size - 1) // 2

    @property
    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        c_in, c_out = self.in_features[0], self.out_features[0]
        return {"weight": (c_out, c_in, self.kernel_size, self.kernel_size), "bias": (c_out,)}

    def init_std(self, name: str) -> float:
        fan_in = self.in_features[0] * self.kernel_size**2
        return math.sqrt(2.0 / fan_in) if name == "weight" else 1.0 / math.sqrt(fan_in)

    def forward(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        out = F.conv2d(x, params["weight"], params["bias"], padding=self.padding,
                       dilation=self.dilation)
        return torch.relu(out) if self.activation else out


class Pool(ImagePrimitive):
    """3x3 max or average pooling with stride 1 and padding 1 (shape-preserving, no parameters)."""

    def __init__(self, in_features, out_features, kind: str = "max", kernel_size: int = 3):
        if kind not in ("max", "avg"):
            raise ValueError(f"pool kind must be 'max' or 'avg', got {kind!r}")
        self.kind, self.kernel_size = kind, int(kernel_size)
        self.op_name = f"{kind}_pool_{kernel_size}x{kernel_size}"
        super().__init__(in_features, out_features)
        self._same_shape()

    def forward(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        pad = self.kernel_size // 2
        if self.kind == "max":
            return F.max_pool2d(x, self.kernel_size, stride=1, padding=pad)
        return F.avg_pool2d(x, self.kernel_size, stride=1, padding=pad, count_include_pad=False)


class SkipConnect(ImagePrimitive):
    """The identity on an image node (DARTS ``skip_connect``)."""

    is_identity = True
    op_name = "skip_connect"

    def __init__(self, in_features, out_features):
        super().__init__(in_features, out_features)
        self._same_shape()

    def forward(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        return x


class NoneOp(Primitive):
    """The zero operation for nodes of any shape (DARTS ``none``)."""

    is_zero = True

    def __init__(self, in_features, out_features):
        self.in_features = in_features if isinstance(in_features, int) else tuple(in_features)
        self.out_features = out_features if isinstance(out_features, int) else tuple(out_features)

    def forward(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        out = (self.out_features,) if isinstance(self.out_features, int) else self.out_features
        return x.new_zeros(x.shape[:1] + tuple(out))


class ImageToVector(ImagePrimitive):
    """``pool_or_flatten(x) W + b``: from an image node to a vector node (e.g. class scores)."""

    def __init__(self, in_features, out_features, pooling: str = "flatten"):
        if pooling not in ("flatten", "mean"):
            raise ValueError(f"pooling must be 'flatten' or 'mean', got {pooling!r}")
        self.pooling = pooling
        self.op_name = "flatten_linear" if pooling == "flatten" else "gap_linear"
        super().__init__(in_features, out_features)
        if not isinstance(self.out_features, int):
            raise ValueError(f"{self.op_name} maps to a vector node, got output size {out_features!r}")

    @property
    def num_inputs(self) -> int:
        c, h, w = self.in_features
        return c * h * w if self.pooling == "flatten" else c

    @property
    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.num_inputs, self.out_features), "bias": (self.out_features,)}

    def init_std(self, name: str) -> float:
        return 1.0 / math.sqrt(self.num_inputs)

    def forward(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        z = x.flatten(-3) if self.pooling == "flatten" else x.mean(dim=(-2, -1))
        return z @ params["weight"] + params["bias"]


def _register() -> None:
    factories = {
        "conv_3x3": lambda i, o, **kw: Conv(i, o, kernel_size=3, **kw),
        "conv_5x5": lambda i, o, **kw: Conv(i, o, kernel_size=5, **kw),
        "dil_conv_3x3": lambda i, o, **kw: Conv(i, o, kernel_size=3, dilation=2, **kw),
        "max_pool_3x3": lambda i, o: Pool(i, o, kind="max"),
        "avg_pool_3x3": lambda i, o: Pool(i, o, kind="avg"),
        "skip_connect": SkipConnect,
        "none": NoneOp,
        "gap_linear": lambda i, o: ImageToVector(i, o, pooling="mean"),
        "flatten_linear": lambda i, o: ImageToVector(i, o, pooling="flatten"),
    }
    from .registry import available_primitives

    present = set(available_primitives())
    for name, factory in factories.items():
        if name not in present:
            register_primitive(name, factory)


_register()

CONV_PRIMITIVES = ["conv_3x3", "conv_5x5", "dil_conv_3x3", "max_pool_3x3", "avg_pool_3x3",
                   "skip_connect", "none", "gap_linear", "flatten_linear"]

__all__ = ["CONV_PRIMITIVES", "Conv", "ImagePrimitive", "ImageToVector", "NoneOp", "Pool",
           "SkipConnect"]

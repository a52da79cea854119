"""The IDX file format of MNIST and Fashion-MNIST: read and write, plain or gzip-compressed.

An IDX file is a big-endian header and a dense array (LeCun et al., "The MNIST database"):

    bytes 0-1   0x00 0x00
    byte  2     the element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
                0x0E float64
    byte  3     the number of dimensions d
    4 .. 4+4d   each dimension's size, a big-endian uint32
    then        prod(sizes) elements in C order, big-endian

``*-idx3-ubyte`` files hold images (n, rows, columns), ``*-idx1-ubyte`` files labels (n,).  A file
whose name ends in ``.gz`` is read and written through :mod:`gzip`.  Every error names the file.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

#: type byte -> numpy dtype (big-endian where it matters)
IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
             0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_TYPE_OF = {np.dtype(v).newbyteorder("=").str if v.itemsize > 1 else v.str: k
            for k, v in IDX_TYPES.items()}


class IDXError(ValueError):
    """A file that is not a well-formed IDX file (the message names it)."""


def _open(path: Path, mode: str):
    return gzip.open(path, mode) if path.name.endswith(".gz") else open(path, mode)


def read_idx(path: "str | Path") -> np.ndarray:
    """The array stored in the IDX file ``path`` (``.gz`` read through gzip), in native byte order."""
    path = Path(path)
    try:
        with _open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise
    except (OSError, EOFError) as err:  # a damaged gzip stream
        raise IDXError(f"{path}: cannot read the file ({err})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IDXError(f"{path}: not an IDX file (the first two bytes must be 0)")
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        raise IDXError(f"{path}: unknown IDX element type 0x{code:02X} "
                       f"(known: {', '.join(f'0x{c:02X}' for c in IDX_TYPES)})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f"{path}: truncated header ({len(data)} bytes, {ndim} dimensions need "
                       f"{header})")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_TYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise IDXError(f"{path}: {len(data) - header} data bytes for shape {tuple(shape)} of "
                       f"{dtype.name}, expected {expected} (a truncated or damaged file)")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def write_idx(array: np.ndarray, path: "str | Path") -> Path:
    """Write ``array`` to ``path`` as IDX (gzip-compressed when the name ends in ``.gz``)."""
    path = Path(path)
    array = np.ascontiguousarray(array)
    key = array.dtype.newbyteorder("=").str if array.dtype.itemsize > 1 else array.dtype.str
    if key not in _TYPE_OF:
        raise IDXError(f"{path}: IDX cannot store dtype {array.dtype} (it stores uint8, int8, "
                       f"int16, int32, float32, float64)")
    code = _TYPE_OF[key]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with _open(path, "wb") as f:
        f.write(header + array.astype(IDX_TYPES[code], copy=False).tobytes())
    return path


__all__ = ["IDXError", "IDX_TYPES", "read_idx", "write_idx"]

"""One's own data from files: CSV / TSV tables, ``.npz`` archives and ``.npy`` pairs.

:func:`read_data_file` returns a :class:`FileTable`: the feature matrix, the target, the task and
(for classification) the class names.  The task is inferred from the target unless given:
integer or string labels are classes (kept by name, in sorted order: label ``k`` of the network is
``class_names[k]``); floating-point values are a regression target.

- **CSV / TSV** (``.csv``, ``.tsv``, ``.txt``; the delimiter is sniffed among ``, ; \\t |``): the
  first line names the columns; ``target`` is a column name.  Every other column is a feature and
  must be numeric; a column listed in ``categorical`` is one-hot encoded instead (one 0/1 column
  ``NAME=VALUE`` per value, in sorted order).  Only the standard library's :mod:`csv` reads it.
- **.npz**: an archive with the features under ``x`` (or ``X``, or the one array left) and the
  target under ``target`` (default ``y``); optional ``feature_names`` and ``class_names``.
  Images keep their shape ``(n, C, H, W)`` (``(n, H, W)`` becomes ``(n, 1, H, W)``).
- **.npy**: the features; ``target`` is the path of a second ``.npy`` with the target (relative
  paths are tried beside the features first), or the integer index of a feature column.

Every error is a :class:`DataFileError` naming the file and, where there is one, the line and the
column: missing values, non-numeric columns, a target that does not exist, a single class.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

logger = logging.getLogger(__name__)

Task = Literal["classification", "regression"]

#: cells read as a missing value
MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?", "-"})
TABLE_SUFFIXES = (".csv", ".tsv", ".txt")
ARRAY_SUFFIXES = (".npz", ".npy")


class DataFileError(ValueError):
    """A data file that cannot be used; the message names the file, line and column."""

    def __init__(self, path: "str | Path", message: str, line: int | None = None,
                 column: str | None = None):
        self.path, self.line, self.column = str(path), line, column
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {message}")


@dataclass
class FileTable:
    """What a data file holds, ready for splitting.

    ``x``: float64 ``(n, d)`` (or ``(n, C, H, W)`` images); ``y``: class indices ``0..K-1``
    (int64) for classification, float64 values for regression; ``class_names[k]`` is the label
    of class ``k`` as it appears in the file.
    """

    x: np.ndarray
    y: np.ndarray
    task: Task
    feature_names: list[str]
    class_names: list | None
    description: str


def is_data_file(path: "str | Path") -> bool:
    """Whether ``path`` names a file this module reads (by suffix)."""
    return Path(path).suffix.lower() in TABLE_SUFFIXES + ARRAY_SUFFIXES


def read_data_file(path: "str | Path", target: "str | int | None" = None,
                   task: Task | None = None, categorical: Sequence[str] = ()) -> FileTable:
    """Read ``path`` (CSV / TSV / .npz / .npy) into a :class:`FileTable` (see the module doc)."""
    path = Path(path)
    if not path.exists():
        raise DataFileError(path, "no such file")
    if path.is_dir():
        raise DataFileError(path, "is a folder, not a data file")
    suffix = path.suffix.lower()
    if task is not None and task not in ("classification", "regression"):
        raise DataFileError(path, f"task must be 'classification' or 'regression', got {task!r}")
    if suffix in TABLE_SUFFIXES:
        if target is None:
            raise DataFileError(path, "name the target column (data.target / --target)")
        x, raw_y, names = _read_table(path, str(target), list(categorical))
        line_of = lambda i: i + 2  # noqa: E731 - the header is line 1
    elif suffix == ".npz":
        if categorical:
            raise DataFileError(path, "categorical columns apply to CSV / TSV files only")
        x, raw_y, names = _read_npz(path, "y" if target is None else str(target))
        line_of = lambda i: None  # noqa: E731
    elif suffix == ".npy":
        if categorical:
            raise DataFileError(path, "categorical columns apply to CSV / TSV files only")
        x, raw_y, names = _read_npy_pair(path, target)
        line_of = lambda i: None  # noqa: E731
    else:
        raise DataFileError(path, f"unknown file type {suffix!r}; readable: "
                                  f"{', '.join(TABLE_SUFFIXES + ARRAY_SUFFIXES)}")
    if len(raw_y) != len(x):
        raise DataFileError(path, f"{len(x)} feature rows but {len(raw_y)} target values")
    column = str(target) if target is not None else "y"
    y, inferred, class_names = _target(path, raw_y, task, line_of, column)
    descr = f"{path.name}: {len(y)} rows, {int(np.prod(x.shape[1:]))} features, " + (
        f"{len(class_names)} classes" if inferred == "classification" else "regression")
    return FileTable(x, y, inferred, names, class_names, descr)


# ---------------------------------------------------------------------------- CSV / TSV
def _delimiter(path: Path, sample: str) -> str:
    if path.suffix.lower() == ".tsv":
        return "\t"
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _read_table(path: Path, target: str, categorical: list[str]
                ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        sample = f.read(65536)
        f.seek(0)
        rows = list(csv.reader(f, delimiter=_delimiter(path, sample)))
    rows = [r for r in rows if any(cell.strip() for cell in r)] if rows else rows
    if not rows:
        raise DataFileError(path, "the file is empty")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    if not body:
        raise DataFileError(path, "the file has a header line but no data rows")
    for name in header:
        if not name:
            raise DataFileError(path, "a column has no name in the header", line=1)
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataFileError(path, f"duplicate column names {dupes}", line=1)
    if target not in header:
        raise DataFileError(path, f"no target column {target!r}; the columns are "
                                  f"{', '.join(header)}", column=target)
    for c in categorical:
        if c not in header:
            raise DataFileError(path, f"categorical column {c!r} does not exist; the columns "
                                      f"are {', '.join(header)}", column=c)
        if c == target:
            raise DataFileError(path, "the target column cannot be one-hot encoded", column=c)
    for i, row in enumerate(body):
        if len(row) != len(header):
            raise DataFileError(path, f"{len(row)} cells, the header has {len(header)}",
                                line=i + 2)
    columns = {name: [row[j].strip() for row in body] for j, name in enumerate(header)}
    for name, cells in columns.items():
        for i, cell in enumerate(cells):
            if cell.lower() in MISSING:
                raise DataFileError(path, f"missing value {cell!r}; fill or drop the row "
                                          f"before the search", line=i + 2, column=name)
    blocks, names = [], []
    for name in header:
        if name == target:
            continue
        cells = columns[name]
        if name in categorical:
            values = sorted(set(cells), key=_sort_key)
            blocks.append(np.array([[cell == v for v in values] for cell in cells],
                                   dtype=np.float64))
            names += [f"{name}={v}" for v in values]
            continue
        numbers = np.empty(len(cells))
        for i, cell in enumerate(cells):
            try:
                numbers[i] = float(cell)
            except ValueError:
                raise DataFileError(path, f"non-numeric value {cell!r}: features must be "
                                          f"numbers; list the column in data.categorical to "
                                          f"one-hot encode it", line=i + 2, column=name) from None
            if not np.isfinite(numbers[i]):
                raise DataFileError(path, f"non-finite value {cell!r}", line=i + 2, column=name)
        blocks.append(numbers[:, None])
        names.append(name)
    if not blocks:
        raise DataFileError(path, f"no feature columns besides the target {target!r}")
    return np.concatenate(blocks, axis=1), np.array(columns[target], dtype=object), names


def _sort_key(value: str):
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


# ---------------------------------------------------------------------------- arrays
def _check_features(path: Path, x: np.ndarray, key: str) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise DataFileError(path, f"the features {key!r} have dtype {x.dtype}; they must be numbers")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim == 3:  # (n, H, W) grey images
        x = x[:, None]
    if x.ndim not in (2, 4):
        raise DataFileError(path, f"the features {key!r} have shape {x.shape}; expected "
                                  f"(n, d) or images (n, C, H, W)")
    x = x.astype(np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        idx = np.argwhere(bad)[0]
        column = f"x[{', '.join(str(int(i)) for i in idx[1:])}]"
        raise DataFileError(path, f"missing or non-finite value {x[tuple(idx)]} in row "
                                  f"{int(idx[0])} (0-based)", column=column)
    return x


def _read_npz(path: Path, target: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DataFileError(path, f"not a readable .npz archive ({err})") from None
    with archive:
        keys = list(archive.files)
        if target not in keys:
            raise DataFileError(path, f"no target array {target!r}; the archive holds "
                                      f"{', '.join(keys)}", column=target)
        rest = [k for k in keys if k not in (target, "feature_names", "class_names")]
        key = next((k for k in ("x", "X") if k in rest), rest[0] if len(rest) == 1 else None)
        if key is None:
            raise DataFileError(path, f"cannot tell the features: name them 'x' (arrays: "
                                      f"{', '.join(keys)})")
        x = _check_features(path, archive[key], key)
        y = archive[target]
        names = ([str(n) for n in archive["feature_names"]] if "feature_names" in keys
                 else [f"x{i}" for i in range(int(np.prod(x.shape[1:])))])
    return x, _check_target_array(path, y, target), names


def _read_npy_pair(path: Path, target: "str | int | None") -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DataFileError(path, f"not a readable .npy file ({err})") from None
    if target is None:
        raise DataFileError(path, "a .npy file needs data.target: the .npy file of the target, "
                                  "or the index of a feature column")
    text = str(target)
    candidates = [path.parent / text, Path(text)]
    found = next((c for c in candidates if c.suffix == ".npy" and c.exists()), None)
    if found is not None:
        try:
            y = np.load(found, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise DataFileError(found, f"not a readable .npy file ({err})") from None
        x = _check_features(path, x, "x")
        return x, _check_target_array(found, y, "y"), [f"x{i}" for i in range(int(np.prod(x.shape[1:])))]
    try:
        column = int(text)
    except ValueError:
        raise DataFileError(path, f"target {text!r} is neither an existing .npy file (looked "
                                  f"for {candidates[0]} and {candidates[1]}) nor a column "
                                  f"index") from None
    if x.ndim != 2 or not -x.shape[1] <= column < x.shape[1]:
        raise DataFileError(path, f"no column {column} in features of shape {x.shape}",
                            column=str(column))
    column %= x.shape[1]
    y = x[:, column]
    rest = np.delete(x, column, axis=1)
    names = [f"x{i}" for i in range(x.shape[1]) if i != column]
    return _check_features(path, rest, "x"), _check_target_array(path, y, str(column)), names


def _check_target_array(path: Path, y: np.ndarray, key: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataFileError(path, f"the target {key!r} has shape {y.shape}; expected (n,)",
                            column=key)
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y)
        if bad.any():
            raise DataFileError(path, f"missing or non-finite target value in row "
                                      f"{int(np.flatnonzero(bad)[0])} (0-based)", column=key)
    elif y.dtype.kind not in "biuUS":
        raise DataFileError(path, f"the target {key!r} has dtype {y.dtype}", column=key)
    return y


# ---------------------------------------------------------------------------- the target
def _parse_all(cells: np.ndarray, kind: type) -> np.ndarray | None:
    try:
        return np.array([kind(c) for c in cells])
    except ValueError:
        return None


def _target(path: Path, raw: np.ndarray, task: Task | None, line_of, column: str
            ) -> tuple[np.ndarray, Task, list | None]:
    """Encode the target: (y, task, class_names)."""
    if raw.dtype == object:  # CSV cells
        ints = _parse_all(raw, int)
        floats = None if ints is not None else _parse_all(raw, float)
        if ints is not None:
            values, kind = ints, "integer"
        elif floats is not None:
            values, kind = floats, "float"
        else:
            values, kind = raw.astype(str), "string"
    elif raw.dtype.kind in "US":
        values, kind = raw.astype(str), "string"
    elif raw.dtype.kind in "biu":
        values, kind = raw.astype(np.int64), "integer"
    else:
        values, kind = raw.astype(np.float64), "float"
    inferred: Task = task or ("regression" if kind == "float" else "classification")
    if inferred == "regression":
        if kind == "string":
            i = next(i for i, v in enumerate(values) if _parse_all(np.array([v]), float) is None)
            raise DataFileError(path, f"non-numeric target value {values[i]!r} for a regression",
                                line=line_of(i), column=column)
        y = values.astype(np.float64)
        if not np.isfinite(y).all():
            i = int(np.flatnonzero(~np.isfinite(y))[0])
            raise DataFileError(path, "non-finite target value", line=line_of(i), column=column)
        if np.ptp(y) == 0:
            raise DataFileError(path, f"the target is constant ({y[0]}): nothing to learn",
                                column=column)
        return y, inferred, None
    if kind == "float" and not np.all(values == np.round(values)):
        i = int(np.flatnonzero(values != np.round(values))[0])
        raise DataFileError(path, f"target value {values[i]} is not a class label (task "
                                  f"classification needs integer or string labels)",
                            line=line_of(i), column=column)
    if kind == "float":
        values = values.astype(np.int64)
    classes, y = np.unique(values, return_inverse=True)
    if len(classes) < 2:
        raise DataFileError(path, f"the target has a single class ({classes[0].item()!r}): a "
                                  f"classifier needs at least two", column=column)
    if kind == "integer" and task is None and len(classes) > max(20, len(values) // 2):
        logger.warning("%s: %d distinct integer target values were read as classes; set "
                       "task: regression if they are quantities", path, len(classes))
    names = [c.item() if hasattr(c, "item") else c for c in classes]
    return y.astype(np.int64), inferred, names


__all__ = ["ARRAY_SUFFIXES", "DataFileError", "FileTable", "MISSING", "TABLE_SUFFIXES",
           "is_data_file", "read_data_file"]

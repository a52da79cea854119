"""Atomic file writes: a file is either its old content or its whole new content, never a part.

The new content goes to a temporary file in the same folder, is flushed and ``fsync``-ed to disk,
and replaces the target with :func:`os.replace` (atomic on POSIX and Windows); the folder is then
``fsync``-ed so the rename itself survives a crash.  A failed write (a full disk, no permission)
removes the temporary file, leaves the old file as it was and raises :class:`FileWriteError`, an
``OSError`` whose one-line message names the path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator


class FileWriteError(OSError):
    """A file could not be written; the message names it, and the previous file is intact."""

    def __init__(self, path: "str | os.PathLike", cause: BaseException):
        self.path = Path(path)
        self.cause = cause
        code = getattr(cause, "errno", None)
        reason = os.strerror(code) if isinstance(code, int) else str(cause) or type(cause).__name__
        super().__init__(code if isinstance(code, int) else errno.EIO,
                         f"cannot write {self.path}: {reason} (the previous file, if any, is "
                         "left as it was)")

    def __str__(self) -> str:
        return self.args[1]

    def __reduce__(self):  # rebuilt from (path, cause) when sent between processes
        return type(self), (self.path, self.cause)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: "str | os.PathLike", write: Callable[[IO[bytes]], Any]) -> Path:
    """Write ``path`` atomically: ``write(f)`` fills a binary temporary file, which is fsync-ed and
    renamed onto ``path`` (:func:`atomic_path`).  Raises :class:`FileWriteError` (naming
    ``path``) if anything fails."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)
    return Path(path)


@contextlib.contextmanager
def atomic_path(path: "str | os.PathLike") -> Iterator[Path]:
    """For writers that want a file name (e.g. NetCDF): yields a temporary path beside ``path``;
    when the block ends without error, the file is fsync-ed and renamed onto ``path``.  Any
    failure removes it and raises :class:`FileWriteError` naming ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise FileWriteError(path, err) from err
    tmp = Path(name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except FileWriteError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of the write is reported by path
        raise FileWriteError(path, err) from err
    finally:
        if tmp.exists():
            try:
                tmp.unlink()
            except OSError:
                pass
    _fsync_dir(path.parent)


def write_text(path: "str | os.PathLike", text: str, encoding: str = "utf-8") -> Path:
    """:func:`atomic_write` of a text."""
    data = text.encode(encoding)
    return atomic_write(path, lambda f: f.write(data))


def torch_save(obj: Any, path: "str | os.PathLike") -> Path:
    """:func:`atomic_write` of ``torch.save(obj)``."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


__all__ = ["FileWriteError", "atomic_path", "atomic_write", "torch_save", "write_text"]

"""The IDX reader on small files written here, and the fashion_mnist data set read from them."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from bnas_pyro.data import FASHION_MNIST_CLASSES, load_dataset
from bnas_pyro.idx import IDXError, read_idx, write_idx


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip(tmp_path, dtype, suffix):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((5, 3, 4)) * 50).astype(dtype)
    path = write_idx(a, tmp_path / f"a-idx3-ubyte{suffix}")
    b = read_idx(path)
    assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b)


def test_the_header_is_the_published_layout(tmp_path):
    # MNIST's label file: magic 0x00000801, then the count, then one byte per label
    raw = struct.pack(">II", 0x00000801, 3) + bytes([7, 2, 1])
    (tmp_path / "l-idx1-ubyte").write_bytes(raw)
    assert read_idx(tmp_path / "l-idx1-ubyte").tolist() == [7, 2, 1]
    write_idx(np.array([7, 2, 1], dtype=np.uint8), tmp_path / "w-idx1-ubyte")
    assert (tmp_path / "w-idx1-ubyte").read_bytes() == raw


def test_bad_files_are_named(tmp_path):
    (tmp_path / "short").write_bytes(struct.pack(">II", 0x00000801, 5) + bytes([1, 2]))
    with pytest.raises(IDXError, match=r"short: 2 data bytes for shape \(5,\)"):
        read_idx(tmp_path / "short")
    (tmp_path / "magic").write_bytes(b"PK\x03\x04")
    with pytest.raises(IDXError, match="magic: not an IDX file"):
        read_idx(tmp_path / "magic")
    (tmp_path / "type").write_bytes(bytes([0, 0, 0x07, 1]) + struct.pack(">I", 0))
    with pytest.raises(IDXError, match="type: unknown IDX element type 0x07"):
        read_idx(tmp_path / "type")
    (tmp_path / "x.gz").write_bytes(b"not gzip at all")
    with pytest.raises(IDXError, match=r"x\.gz: cannot read"):
        read_idx(tmp_path / "x.gz")


def _fake_fashion(folder, n_train=60, n_test=20, gz=True):
    rng = np.random.default_rng(1)
    s = ".gz" if gz else ""
    for part, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = 0  # a constant pixel, as the real set has
        images[:, 5, 5] = labels * 20  # the label shows in one pixel
        write_idx(images, folder / f"{part}-images-idx3-ubyte{s}")
        write_idx(labels, folder / f"{part}-labels-idx1-ubyte{s}")


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_a_folder(tmp_path, gz):
    _fake_fashion(tmp_path, gz=gz)
    d = load_dataset("fashion_mnist", path=tmp_path, val_fraction=0.2)
    assert d.sizes == {"train": 48, "val": 12, "test": 20}  # the official test split is kept
    assert d.input_shape == (784,) and d.n_classes == 10
    assert d.class_names == FASHION_MNIST_CLASSES
    assert d.y_test.tolist() == (np.arange(20) % 10).tolist()  # the t10k rows, in order
    raw = (d.x_test * d.x_std + d.x_mean).round()
    assert raw[:, 5 * 28 + 5].tolist() == [20.0 * (i % 10) for i in range(20)]
    im = load_dataset("fashion_mnist_images", path=tmp_path)
    assert im.input_shape == (1, 28, 28) and im.x_mean.shape == (1, 1, 1)


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"apt-get install dataset-fashion-mnist.*data\.path"):
        load_dataset("fashion_mnist", path=tmp_path)

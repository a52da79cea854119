"""Built-in data sets, split and standardised reproducibly; nothing downloads.

Real data sets are the ones bundled with scikit-learn (read from its package files):

- ``digits``        8x8 handwritten digits as 64-vectors, 10 classes (1797 images);
- ``digits_images`` the same digits as ``1 x 8 x 8`` images (for convolutional spaces);
- ``breast_cancer`` 30 features, 2 classes (569 cases);
- ``wine``          13 features, 3 classes (178 wines);
- ``diabetes``      10 features, regression (442 patients).

Synthetic sets of METHOD.md section 6:

- ``tanh``       the thesis's architecture example: x in R^11, x[j] ~ N(0, 1) for j < 10 plus a
                 constant feature 1, y = tanh(x[0]) + 0.5 eps; m = 50 training points;
- ``polynomial`` the source talk's degree example: x ~ U(-2, 2), y = x^3 - x + 0.5 eps; m = 40;
- ``annals``     the Annals-of-OR synthetic set: y = x + eps with the 12 features
                 {x^0, ..., x^9, sin x, cos x}; m = 40.  The paper gives m, the target and the
                 features; x ~ U(-1, 1) and eps ~ N(0, 1) are our choice (it does not state them).

Synthetic sets draw ``m / (1 - val_fraction - test_fraction)`` points so that the training part
has the paper's m.  Every split is a seeded permutation (stratified for classification), and
standardisation is fitted on the training part only; constant columns (such as the thesis's
feature 1 or x^0) are left as they are.  Regression targets are standardised too and the
:class:`SplitData` keeps ``y_mean`` / ``y_std`` so errors can be reported in the original units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import Tensor

from bnas_pyro.registry import Registry

Task = Literal["classification", "regression"]


@dataclass
class SplitData:
    """A data set split into train / validation / test tensors.

    Attributes:
        name: the data set's registry name.
        task: ``"classification"`` (integer labels) or ``"regression"`` (float targets).
        x_train, y_train, x_val, y_val, x_test, y_test: the splits; ``x`` has shape
            ``(n, *input_shape)``; ``y`` is ``(n,)`` (long for classes, float for regression).
        n_classes: number of classes (``None`` for regression).
        feature_names: one name per input feature (flattened order for images).
        input_shape: the shape of one input, e.g. ``(64,)`` or ``(1, 8, 8)``.
        x_mean, x_std: the standardisation fitted on the training split (per feature, or per
            channel for images); ``y_mean``, ``y_std`` likewise for regression targets.
    """

    name: str
    task: Task
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    n_classes: int | None
    feature_names: list[str]
    input_shape: tuple[int, ...]
    x_mean: Tensor | None = None
    x_std: Tensor | None = None
    y_mean: float = 0.0
    y_std: float = 1.0
    description: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def output_size(self) -> int:
        """Size of the network's output node: the number of classes, or 1 for regression."""
        return int(self.n_classes) if self.task == "classification" else 1

    @property
    def input_size(self) -> "int | tuple[int, ...]":
        """The input node's size: an int for vectors, the shape tuple for images."""
        return self.input_shape[0] if len(self.input_shape) == 1 else tuple(self.input_shape)

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}

    def split(self, which: str) -> tuple[Tensor, Tensor]:
        """``(x, y)`` of ``"train"``, ``"val"`` or ``"test"``."""
        if which not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {which!r}")
        return getattr(self, f"x_{which}"), getattr(self, f"y_{which}")

    def to(self, device: "str | torch.device | None" = None,
           dtype: torch.dtype | None = None) -> "SplitData":
        """A copy on ``device``; ``dtype`` applies to the inputs and float targets only."""
        def move_x(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device=device, dtype=dtype)

        def move_y(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return replace(self, x_train=move_x(self.x_train), x_val=move_x(self.x_val),
                       x_test=move_x(self.x_test), y_train=move_y(self.y_train),
                       y_val=move_y(self.y_val), y_test=move_y(self.y_test),
                       x_mean=move_x(self.x_mean), x_std=move_x(self.x_std))

    def summary(self) -> str:
        s = self.sizes
        kind = (f"{self.n_classes} classes" if self.task == "classification" else "regression")
        return (f"{self.name}: {kind}, input {self.input_shape}, "
                f"train/val/test = {s['train']}/{s['val']}/{s['test']}")


# ---------------------------------------------------------------------------- raw loaders
RawData = tuple[np.ndarray, np.ndarray, Task, list[str], str]


def _sklearn(loader_name: str, task: Task) -> Callable[..., RawData]:
    def load(rng: np.random.Generator) -> RawData:
        import sklearn.datasets as skd

        bunch = getattr(skd, loader_name)()
        names = [str(n) for n in getattr(bunch, "feature_names", [])] or [
            f"x{i}" for i in range(bunch.data.shape[1])]
        descr = (bunch.DESCR or "").strip().splitlines()
        title = next((line.strip(". ") for line in descr if line.strip() and not line.startswith("..")),
                     loader_name)
        return bunch.data.astype(np.float64), bunch.target, task, names, title

    return load


def _tanh(rng: np.random.Generator, m: int) -> RawData:
    x = rng.standard_normal((m, 11))
    x[:, 10] = 1.0
    y = np.tanh(x[:, 0]) + 0.5 * rng.standard_normal(m)
    names = [f"x{j}" for j in range(10)] + ["one"]
    return x, y, "regression", names, "thesis tanh set: y = tanh(x0) + 0.5 eps"


def _polynomial(rng: np.random.Generator, m: int) -> RawData:
    x = rng.uniform(-2.0, 2.0, size=(m, 1))
    y = x[:, 0] ** 3 - x[:, 0] + 0.5 * rng.standard_normal(m)
    return x, y, "regression", ["x"], "polynomial set: y = x^3 - x + 0.5 eps, x ~ U(-2, 2)"


def _annals(rng: np.random.Generator, m: int) -> RawData:
    x = rng.uniform(-1.0, 1.0, size=m)
    feats = np.stack([x**d for d in range(10)] + [np.sin(x), np.cos(x)], axis=1)
    y = x + rng.standard_normal(m)
    names = [f"x^{d}" for d in range(10)] + ["sin x", "cos x"]
    return feats, y, "regression", names, "Annals-of-OR set: y = x + eps, features x^0..x^9, sin, cos"


@dataclass(frozen=True)
class DatasetInfo:
    """A registered data set: how to load it and how to present it."""

    name: str
    task: Task
    description: str
    loader: Callable[..., RawData]
    image_shape: tuple[int, ...] | None = None
    synthetic_m: int | None = None
    standardize_default: bool = True


#: every data set by name
DATASETS: Registry[DatasetInfo] = Registry("data set")


def register_dataset(info: DatasetInfo, overwrite: bool = False) -> None:
    """Add a data set to the registry (``bnas-pyro list`` shows it; configs may name it)."""
    DATASETS.register(info.name, info, overwrite=overwrite)


for _info in (
    DatasetInfo("digits", "classification", "scikit-learn digits, 8x8 images as 64-vectors, 10 classes",
                _sklearn("load_digits", "classification")),
    DatasetInfo("digits_images", "classification", "scikit-learn digits as 1x8x8 images, 10 classes",
                _sklearn("load_digits", "classification"), image_shape=(1, 8, 8)),
    DatasetInfo("breast_cancer", "classification", "Wisconsin breast cancer, 30 features, 2 classes",
                _sklearn("load_breast_cancer", "classification")),
    DatasetInfo("wine", "classification", "UCI wine, 13 features, 3 classes",
                _sklearn("load_wine", "classification")),
    DatasetInfo("diabetes", "regression", "scikit-learn diabetes, 10 features, regression",
                _sklearn("load_diabetes", "regression")),
    DatasetInfo("tanh", "regression", "thesis tanh set (METHOD.md section 6), m = 50",
                _tanh, synthetic_m=50, standardize_default=False),
    DatasetInfo("polynomial", "regression", "the source talk's polynomial set y = x^3 - x + 0.5 eps, m = 40",
                _polynomial, synthetic_m=40, standardize_default=False),
    DatasetInfo("annals", "regression", "Annals-of-OR synthetic set y = x + eps, 12 features, m = 40",
                _annals, synthetic_m=40, standardize_default=False),
):
    register_dataset(_info)


def available_datasets() -> list[str]:
    return DATASETS.names()


def dataset_info(name: str) -> DatasetInfo:
    """The registered data set ``name`` (unknown names raise ``KeyError``)."""
    return DATASETS.get(name)


# ---------------------------------------------------------------------------- splitting
def _split_indices(n: int, y: np.ndarray | None, val_fraction: float, test_fraction: float,
                   seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train / val / test indices; stratified by ``y`` when it is given."""
    rng = np.random.default_rng(seed)
    n_test = int(round(test_fraction * n))
    n_val = int(round(val_fraction * n))
    if n - n_test - n_val < 2:
        raise ValueError(f"fractions val={val_fraction}, test={test_fraction} leave fewer than "
                         f"2 of {n} points for training")
    if y is None:
        perm = rng.permutation(n)
        return perm[n_test + n_val:], perm[n_test:n_test + n_val], perm[:n_test]
    # stratified: deal each class's shuffled indices out in proportion
    train, val, test = [], [], []
    classes = np.unique(y)
    # allocate per-class counts by largest remainder so the totals are exact
    counts = np.array([(y == c).sum() for c in classes])
    want_test = _allocate(counts, n_test)
    want_val = _allocate(counts, n_val)
    for c, k_test, k_val in zip(classes, want_test, want_val):
        idx = rng.permutation(np.flatnonzero(y == c))
        test.append(idx[:k_test])
        val.append(idx[k_test:k_test + k_val])
        train.append(idx[k_test + k_val:])
    out = []
    for part in (train, val, test):
        part = np.concatenate(part)
        out.append(part[rng.permutation(len(part))])
    return out[0], out[1], out[2]


def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    exact = counts / counts.sum() * total
    base = np.floor(exact).astype(int)
    order = np.argsort(-(exact - base), kind="stable")
    base[order[: total - base.sum()]] += 1
    return base


def _standardizer(x: np.ndarray, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std fitted on ``x`` (the training split); constant columns get (0, 1)."""
    if per_channel:  # images (n, C, H, W): one mean / std per channel
        axes = (0,) + tuple(range(2, x.ndim))
        mean = x.mean(axis=axes, keepdims=True)[0]
        std = x.std(axis=axes, keepdims=True)[0]
    else:
        mean, std = x.mean(axis=0), x.std(axis=0)
    constant = std < 1e-12
    mean = np.where(constant, 0.0, mean)
    std = np.where(constant, 1.0, std)
    return mean, std


def load_dataset(name: str, seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2,
                 standardize: bool | None = None, m: int | None = None,
                 dtype: torch.dtype = torch.float32, device: "str | torch.device" = "cpu") -> SplitData:
    """Load ``name``, split it with ``seed`` and standardise on the training split.

    Args:
        name: a registered data set (see :func:`available_datasets`).
        seed: seeds the split (and the draws of a synthetic set).
        val_fraction, test_fraction: the parts held out for validation and test.
        standardize: standardise inputs (and regression targets) with the training split's
            statistics; default ``True`` for real data, ``False`` for the synthetic sets (whose
            scales are part of the experiment).
        m: training-set size of a synthetic set (default: the paper's m).
        dtype, device: of the returned float tensors (labels are ``torch.long``).
    """
    info = dataset_info(name)
    for key, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (0.0 <= frac < 1.0):
            raise ValueError(f"{key} must be in [0, 1), got {frac}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}")
    rng = np.random.default_rng(seed)
    if info.synthetic_m is not None:
        m_train = int(m if m is not None else info.synthetic_m)
        if m_train < 2:
            raise ValueError(f"m must be >= 2, got {m_train}")
        n_total = int(math.ceil(m_train / (1.0 - val_fraction - test_fraction)))
        x, y, task, names, descr = info.loader(rng, n_total)
    else:
        if m is not None:
            raise ValueError(f"m (training size) applies to synthetic data sets only, not {name!r}")
        x, y, task, names, descr = info.loader(rng)
    classification = task == "classification"
    y = np.asarray(y)
    train, val, test = _split_indices(len(y), y if classification else None,
                                      val_fraction, test_fraction, seed)
    if info.synthetic_m is not None:  # keep the paper's m exactly for training
        pool = np.concatenate([train, val, test])
        n_test = len(test)
        n_val = len(pool) - m_train - n_test
        train, val, test = pool[:m_train], pool[m_train:m_train + n_val], pool[m_train + n_val:]
    if info.image_shape is not None:
        x = x.reshape((-1,) + info.image_shape)
    do_std = info.standardize_default if standardize is None else bool(standardize)
    x_mean = x_std = None
    y_mean, y_std = 0.0, 1.0
    if do_std:
        mean, std = _standardizer(x[train], per_channel=info.image_shape is not None)
        x = (x - mean) / std
        x_mean = torch.as_tensor(mean, dtype=dtype, device=device)
        x_std = torch.as_tensor(std, dtype=dtype, device=device)
        if not classification:
            y_mean, y_std = float(y[train].mean()), float(y[train].std())
            y = (y - y_mean) / y_std

    def tx(idx: np.ndarray) -> Tensor:
        return torch.as_tensor(x[idx], dtype=dtype, device=device)

    def ty(idx: np.ndarray) -> Tensor:
        if classification:
            return torch.as_tensor(y[idx], dtype=torch.long, device=device)
        return torch.as_tensor(y[idx], dtype=dtype, device=device)

    n_classes = int(np.unique(y).size) if classification else None
    return SplitData(
        name=name, task=task, x_train=tx(train), y_train=ty(train), x_val=tx(val), y_val=ty(val),
        x_test=tx(test), y_test=ty(test), n_classes=n_classes, feature_names=list(names),
        input_shape=tuple(x.shape[1:]), x_mean=x_mean, x_std=x_std, y_mean=y_mean, y_std=y_std,
        description=descr, info={"seed": seed, "val_fraction": val_fraction,
                                 "test_fraction": test_fraction, "standardized": do_std})


__all__ = ["DatasetInfo", "SplitData", "available_datasets", "dataset_info", "load_dataset",
           "register_dataset"]

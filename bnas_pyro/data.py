"""Built-in data sets, split and standardised reproducibly; nothing downloads.

Real data sets are the ones bundled with scikit-learn (read from its package files):

- ``digits``        8x8 handwritten digits as 64-vectors, 10 classes (1797 images);
- ``digits_images`` the same digits as ``1 x 8 x 8`` images (for convolutional spaces);
- ``breast_cancer`` 30 features, 2 classes (569 cases);
- ``wine``          13 features, 3 classes (178 wines);
- ``diabetes``      10 features, regression (442 patients).

Fashion-MNIST (Xiao, Rasul and Vollgraf 2017) is read from its four IDX files
(:mod:`bnas_pyro.idx`) in ``path`` or :data:`FASHION_MNIST_FOLDER`, where the Debian / Ubuntu
package ``dataset-fashion-mnist`` installs them (nothing downloads):

- ``fashion_mnist``        60,000 training and 10,000 test images as 784-vectors, 10 classes;
- ``fashion_mnist_images`` the same as ``1 x 28 x 28`` images.

Its official test split is kept; the validation split is ``val_fraction`` of the 60,000.

One's own data: :func:`load_file` reads a CSV / TSV / .npz / .npy file
(:mod:`bnas_pyro.data_files`) and splits it the same way.

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
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import Tensor

from bnas_pyro.data_files import DataFileError, read_data_file
from bnas_pyro.idx import read_idx
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
            channel for images), float64 whatever the inputs' dtype (the exact statistics the
            inputs were standardised with); ``y_mean``, ``y_std`` likewise for regression
            targets.
        class_names: the label of each class index as the source names it (``None``: the
            indices themselves).
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
    class_names: list | None = None

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
                       x_mean=None if self.x_mean is None else self.x_mean.to(device=device),
                       x_std=None if self.x_std is None else self.x_std.to(device=device))

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


#: where the Debian / Ubuntu package ``dataset-fashion-mnist`` installs the four IDX files
FASHION_MNIST_FOLDER = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def _fashion_mnist(rng: np.random.Generator, path: "str | Path | None" = None) -> RawData:
    """The 60,000 training and 10,000 test images (in that order), uint8 ``(70000, 784)``."""
    folder = Path(path) if path is not None else FASHION_MNIST_FOLDER
    found = {stem: _find_idx(folder, stem) for stem in FASHION_MNIST_FILES}
    missing = [stem for stem, p in found.items() if p is None]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST: {', '.join(missing)}[.gz] not found in {folder}. Install the "
            f"Debian/Ubuntu package with `sudo apt-get install dataset-fashion-mnist` (it puts "
            f"the four files in {FASHION_MNIST_FOLDER}), or put the four IDX files of "
            f"https://github.com/zalandoresearch/fashion-mnist in a folder and set data.path "
            f"to it")
    arrays = {stem: read_idx(p) for stem, p in found.items()}
    images = [arrays["train-images-idx3-ubyte"], arrays["t10k-images-idx3-ubyte"]]
    labels = [arrays["train-labels-idx1-ubyte"], arrays["t10k-labels-idx1-ubyte"]]
    for im, lab, part in zip(images, labels, ("train", "t10k")):
        if im.ndim != 3 or len(im) != len(lab):
            raise ValueError(f"Fashion-MNIST in {folder}: {part} images of shape {im.shape} do "
                             f"not match {len(lab)} labels")
    x = np.concatenate([im.reshape(len(im), -1) for im in images]).astype(np.float32)
    y = np.concatenate(labels).astype(np.int64)
    names = [f"pixel{r}_{c}" for r in range(images[0].shape[1]) for c in range(images[0].shape[2])]
    return (x, y, "classification", names, "Fashion-MNIST (Xiao et al. 2017), 28x28 grey images",
            len(labels[1]))


@dataclass(frozen=True)
class DatasetInfo:
    """A registered data set: how to load it and how to present it.

    ``loader(rng)`` returns ``(x, y, task, feature_names, description)`` (``loader(rng, m)`` for
    a synthetic set with ``synthetic_m``, ``loader(rng, path)`` when ``reads_path``).  With
    ``official_test`` it returns a sixth element, the number of final rows that form the
    official test split (kept as the test split; ``test_fraction`` is then ignored).
    """

    name: str
    task: Task
    description: str
    loader: Callable[..., RawData]
    image_shape: tuple[int, ...] | None = None
    synthetic_m: int | None = None
    standardize_default: bool = True
    reads_path: bool = False
    official_test: bool = False
    class_names: tuple | None = None


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
    DatasetInfo("fashion_mnist", "classification", "Fashion-MNIST, 28x28 images as 784-vectors, "
                "10 classes, 60000 + 10000 (IDX files in data.path or "
                f"{FASHION_MNIST_FOLDER})", _fashion_mnist, reads_path=True, official_test=True,
                class_names=tuple(FASHION_MNIST_CLASSES)),
    DatasetInfo("fashion_mnist_images", "classification", "Fashion-MNIST as 1x28x28 images, "
                "10 classes, 60000 + 10000", _fashion_mnist, image_shape=(1, 28, 28),
                reads_path=True, official_test=True, class_names=tuple(FASHION_MNIST_CLASSES)),
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
def split_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """The (train, val, test) sizes of a split of ``n`` rows (what :func:`_split_indices` cuts)."""
    n_test = int(round(test_fraction * n))
    n_val = int(round(val_fraction * n))
    return n - n_test - n_val, n_val, n_test


def _split_indices(n: int, y: np.ndarray | None, val_fraction: float, test_fraction: float,
                   seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train / val / test indices; stratified by ``y`` when it is given."""
    rng = np.random.default_rng(seed)
    n_train, n_val, n_test = split_sizes(n, val_fraction, test_fraction)
    if n_train < 2:
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


def fit_standardizer(x: np.ndarray, per_channel: bool = False) -> tuple[np.ndarray, np.ndarray]:
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
                 dtype: torch.dtype = torch.float32, device: "str | torch.device" = "cpu",
                 path: "str | Path | None" = None) -> SplitData:
    """Load ``name``, split it with ``seed`` and standardise on the training split.

    Args:
        name: a registered data set (see :func:`available_datasets`).
        seed: seeds the split (and the draws of a synthetic set).
        val_fraction, test_fraction: the parts held out for validation and test (a data set
            with an official test split, such as ``fashion_mnist``, keeps it and ignores
            ``test_fraction``; the validation part is then a fraction of the training images).
        standardize: standardise inputs (and regression targets) with the training split's
            statistics; default ``True`` for real data, ``False`` for the synthetic sets (whose
            scales are part of the experiment).
        m: training-set size of a synthetic set (default: the paper's m).
        dtype, device: of the returned float tensors (labels are ``torch.long``).
        path: the folder of a data set read from files (``fashion_mnist``; default its
            standard folder).
    """
    info = dataset_info(name)
    _check_fractions(val_fraction, test_fraction)
    rng = np.random.default_rng(seed)
    if path is not None and not info.reads_path:
        raise ValueError(f"data set {name!r} does not read files; path {str(path)!r} applies to "
                         f"data sets read from a folder and to data files")
    if info.synthetic_m is not None:
        m_train = int(m if m is not None else info.synthetic_m)
        if m_train < 2:
            raise ValueError(f"m must be >= 2, got {m_train}")
        n_total = int(math.ceil(m_train / (1.0 - val_fraction - test_fraction)))
        x, y, task, names, descr = info.loader(rng, n_total)
    else:
        if m is not None:
            raise ValueError(f"m (training size) applies to synthetic data sets only, not {name!r}")
        raw = info.loader(rng, path) if info.reads_path else info.loader(rng)
        x, y, task, names, descr = raw[:5]
        n_official_test = int(raw[5]) if info.official_test else None
    classification = task == "classification"
    y = np.asarray(y)
    if info.synthetic_m is None and info.official_test:  # the official test split: the last rows
        n_pool = len(y) - n_official_test
        train, val, _ = _split_indices(n_pool, y[:n_pool] if classification else None,
                                       val_fraction, 0.0, seed)
        test = np.arange(n_pool, len(y))
    else:
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
    n_classes = int(np.unique(y).size) if classification else None
    return _assemble(name, x, y, task, names, descr, (train, val, test), do_std,
                     info.image_shape is not None, n_classes,
                     None if info.class_names is None else list(info.class_names), dtype, device,
                     {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction,
                      "standardized": do_std})


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for key, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (0.0 <= frac < 1.0):
            raise ValueError(f"{key} must be in [0, 1), got {frac}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}")


def _assemble(name: str, x: np.ndarray, y: np.ndarray, task: Task, names: list[str], descr: str,
              parts: tuple[np.ndarray, np.ndarray, np.ndarray], do_std: bool, images: bool,
              n_classes: int | None, class_names: list | None, dtype: torch.dtype,
              device: "str | torch.device", info: dict[str, Any]) -> SplitData:
    """Standardise with the training part's statistics (if ``do_std``) and cut the tensors."""
    train, val, test = parts
    classification = task == "classification"
    x_mean = x_std = None
    y_mean, y_std = 0.0, 1.0
    if do_std:
        mean, std = fit_standardizer(x[train], per_channel=images)
        work = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
        x = x.astype(work, copy=True)
        x -= mean.astype(work)
        x /= std.astype(work)
        x_mean = torch.as_tensor(mean, dtype=torch.float64, device=device)
        x_std = torch.as_tensor(std, dtype=torch.float64, device=device)
        if not classification:
            y_mean, y_std = float(y[train].mean()), float(y[train].std())
            y = (y - y_mean) / y_std

    def tx(idx: np.ndarray) -> Tensor:
        return torch.as_tensor(x[idx], dtype=dtype, device=device)

    def ty(idx: np.ndarray) -> Tensor:
        if classification:
            return torch.as_tensor(y[idx], dtype=torch.long, device=device)
        return torch.as_tensor(y[idx], dtype=dtype, device=device)

    return SplitData(
        name=name, task=task, x_train=tx(train), y_train=ty(train), x_val=tx(val), y_val=ty(val),
        x_test=tx(test), y_test=ty(test), n_classes=n_classes, feature_names=list(names),
        input_shape=tuple(x.shape[1:]), x_mean=x_mean, x_std=x_std, y_mean=y_mean, y_std=y_std,
        description=descr, info=info, class_names=class_names)


def load_file(path: "str | Path", target: "str | int | None" = None, task: Task | None = None,
              categorical: "list[str] | tuple[str, ...]" = (), seed: int = 0,
              val_fraction: float = 0.2, test_fraction: float = 0.2, standardize: bool = True,
              dtype: torch.dtype = torch.float32, device: "str | torch.device" = "cpu"
              ) -> SplitData:
    """One's own data from a CSV / TSV / .npz / .npy file (:mod:`bnas_pyro.data_files`), split
    and standardised like the built-in sets (stratified for classification, statistics of the
    training part only).  Class names are kept in ``SplitData.class_names``.

    Raises :class:`~bnas_pyro.data_files.DataFileError` (naming the file, line and column) for
    missing values, non-numeric columns, a missing target, a single class, or fewer rows than
    the splits need.
    """
    _check_fractions(val_fraction, test_fraction)
    table = read_data_file(path, target, task, categorical)
    n = len(table.y)
    classification = table.task == "classification"
    n_train, n_val, n_test = split_sizes(n, val_fraction, test_fraction)
    need_val, need_test = val_fraction > 0, test_fraction > 0
    n_classes = len(table.class_names) if classification else None
    if (n_train < max(2, n_classes or 0) or (need_val and n_val < 1) or (need_test and n_test < 1)):
        raise DataFileError(path, f"{n} rows are too few for the splits: val_fraction "
                                  f"{val_fraction} and test_fraction {test_fraction} give "
                                  f"train/val/test = {n_train}/{n_val}/{n_test}; the training "
                                  f"part needs at least {max(2, n_classes or 0)} rows"
                                  + (" (one per class)" if classification else "")
                                  + " and each held-out part at least one")
    parts = _split_indices(n, table.y if classification else None, val_fraction, test_fraction,
                           seed)
    if classification:
        missing = sorted(set(range(n_classes)) - set(table.y[parts[0]].tolist()))
        if missing:
            raise DataFileError(path, f"class(es) {[table.class_names[k] for k in missing]} "
                                      f"have no row in the training part: too few rows of them",
                                column=str(target))
    return _assemble(Path(path).stem, table.x, table.y, table.task, table.feature_names,
                     table.description, parts, standardize, table.x.ndim == 4, n_classes,
                     table.class_names, dtype, device,
                     {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction,
                      "standardized": standardize, "path": str(path),
                      "target": None if target is None else str(target)})


__all__ = ["DataFileError", "DatasetInfo", "FASHION_MNIST_FOLDER", "SplitData",
           "fit_standardizer", "available_datasets", "dataset_info", "load_dataset", "load_file", "register_dataset"]

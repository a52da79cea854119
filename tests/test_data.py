"""Built-in data sets: seeded splits, train-only standardisation, the synthetic generators."""

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from bnas_pyro.data import available_datasets, load_dataset


def _raw(d, which):
    x, y = d.split(which)
    return x * d.x_std + d.x_mean, y


def test_registry_lists_every_builtin_set():
    assert set(available_datasets()) >= {"digits", "digits_images", "breast_cancer", "wine",
                                          "diabetes", "tanh", "polynomial", "annals"}


def test_same_seed_same_split_other_seed_other_split():
    a, b, c = load_dataset("wine", seed=3), load_dataset("wine", seed=3), load_dataset("wine", seed=4)
    for which in ("train", "val", "test"):
        assert torch.equal(a.split(which)[0], b.split(which)[0])
        assert torch.equal(a.split(which)[1], b.split(which)[1])
    assert not torch.equal(a.x_test, c.x_test)


def test_digits_split_sizes_partition_and_stratification():
    d = load_dataset("digits", seed=0)
    assert d.sizes == {"train": 1079, "val": 359, "test": 359}  # 1797 = 1079 + 2 * round(0.2 * 1797)
    assert d.n_classes == 10 and d.input_shape == (64,) and d.task == "classification"
    # the three parts together are exactly the bundled data set (as a multiset of rows)
    raw = load_digits()
    rows = torch.cat([_raw(d, w)[0] for w in ("train", "val", "test")]).round().long().numpy()
    labels = torch.cat([d.y_train, d.y_val, d.y_test]).numpy()
    ours = sorted(map(tuple, np.column_stack([rows, labels]).tolist()))
    theirs = sorted(map(tuple, np.column_stack([raw.data.astype(int), raw.target]).tolist()))
    assert ours == theirs
    # stratified: each class's share of the test split within one point of its share overall
    counts = np.bincount(raw.target, minlength=10)
    test_counts = np.bincount(d.y_test.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - counts * 359 / 1797) <= 1.0)


def test_standardisation_is_fitted_on_the_training_split_only():
    d = load_dataset("digits", seed=1)
    raw_train = _raw(d, "train")[0]
    # the stored statistics are the training rows' mean / std (constant pixels get 0 / 1)
    np.testing.assert_allclose(raw_train.mean(0), d.x_mean, atol=1e-4)
    std = raw_train.std(0, unbiased=False)
    constant = std < 1e-6
    assert constant.any()  # digits has always-blank corner pixels
    np.testing.assert_allclose(std[~constant], d.x_std[~constant], rtol=1e-4)
    assert torch.all(d.x_std[constant] == 1) and torch.all(d.x_mean[constant] == 0)
    # train is standardised exactly, test is not (it was not used for fitting)
    nonconst = ~constant
    assert d.x_train[:, nonconst].mean(0).abs().max() < 1e-5
    np.testing.assert_allclose(d.x_train[:, nonconst].std(0, unbiased=False), 1.0, atol=1e-4)
    assert d.x_test[:, nonconst].mean(0).abs().max() > 0.05


def test_digits_images_are_the_same_split_reshaped():
    v, im = load_dataset("digits", seed=2), load_dataset("digits_images", seed=2)
    assert im.input_shape == (1, 8, 8) and im.x_train.shape == (1079, 1, 8, 8)
    assert torch.equal(v.y_test, im.y_test)
    # per-channel standardisation: one mean and std for all 64 pixels
    assert im.x_mean.shape == (1, 1, 1)
    assert torch.allclose((im.x_test * im.x_std + im.x_mean).flatten(1),
                          v.x_test * v.x_std + v.x_mean, atol=1e-3)


def test_regression_targets_standardised_and_units_kept():
    d = load_dataset("diabetes", seed=0)
    assert d.task == "regression" and d.n_classes is None and d.output_size == 1
    assert abs(float(d.y_train.mean())) < 1e-5
    assert abs(float(d.y_train.std(unbiased=False)) - 1.0) < 1e-4
    # undoing the standardisation gives the original targets (diabetes: 25..346)
    y = d.y_test * d.y_std + d.y_mean
    assert 20 < float(y.min()) and float(y.max()) < 350
    assert y.dtype == torch.float32


def test_thesis_tanh_set():
    d = load_dataset("tanh", seed=0)
    assert len(d.y_train) == 50 and d.input_shape == (11,)  # m = 50, ten N(0,1) features + 1
    x = torch.cat([d.x_train, d.x_val, d.x_test])
    y = torch.cat([d.y_train, d.y_val, d.y_test])
    assert torch.all(x[:, 10] == 1.0)  # the constant feature is left as it is
    noise = y - torch.tanh(x[:, 0])
    assert 0.35 < float(noise.std()) < 0.65  # eps scale 0.5


def test_polynomial_and_annals_sets():
    p = load_dataset("polynomial", seed=0)
    assert len(p.y_train) == 40
    x = p.x_train[:, 0]
    assert float(x.abs().max()) <= 2.0
    assert 0.3 < float((p.y_train - (x**3 - x)).std()) < 0.7
    a = load_dataset("annals", seed=0)
    assert len(a.y_train) == 40 and a.input_shape == (12,)
    f = a.x_train
    x = f[:, 1]
    assert torch.all(f[:, 0] == 1)
    assert torch.allclose(f[:, 9], x**9, atol=1e-6)
    assert torch.allclose(f[:, 10], torch.sin(x), atol=1e-6)
    assert torch.allclose(f[:, 11], torch.cos(x), atol=1e-6)
    assert a.feature_names[10] == "sin x"


def test_synthetic_m_option_and_errors():
    assert len(load_dataset("tanh", m=200).y_train) == 200
    with pytest.raises(ValueError, match="synthetic"):
        load_dataset("wine", m=10)
    with pytest.raises(KeyError, match="unknown data set 'mnist'"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="test_fraction"):
        load_dataset("wine", test_fraction=1.2)


def test_to_dtype_keeps_labels_integer():
    d = load_dataset("wine").to(dtype=torch.float64)
    assert d.x_train.dtype == torch.float64 and d.y_train.dtype == torch.long
    r = load_dataset("diabetes").to(dtype=torch.float64)
    assert r.y_train.dtype == torch.float64
    assert math.isclose(r.y_std, load_dataset("diabetes").y_std)

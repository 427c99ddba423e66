import os
import pickle
import urllib.error
from collections import Counter

import numpy as np
import pytest
import torch

from minicompress import data


def test_mnist5k_is_a_stratified_4000_1000_split_of_real_digits():
    train, test = data.load("mnist5k")
    assert (len(train), len(test)) == (4000, 1000)
    image, label = train[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    # 500 images per class split 400 / 100.
    assert Counter(test.tensors[1].tolist()) == {c: 100 for c in range(10)}
    assert Counter(train.tensors[1].tolist()) == {c: 400 for c in range(10)}
    # Normalised with MNIST's mean and std: background pixels sit at -0.1307 / 0.3081.
    assert train.tensors[0].min().item() == pytest.approx(
        -data.MNIST_MEAN / data.MNIST_STD, abs=1e-5
    )
    assert abs(train.tensors[0].mean().item()) < 0.1


def test_mnist5k_split_is_deterministic_and_disjoint():
    a_train, a_test = data.load("mnist5k")
    b_train, b_test = data.load("mnist5k")
    assert torch.equal(a_test.tensors[0], b_test.tensors[0])
    train_rows = {tuple(x.flatten()[::7].tolist()) for x in a_train.tensors[0][:500]}
    test_rows = {tuple(x.flatten()[::7].tolist()) for x in a_test.tensors[0]}
    assert not train_rows & test_rows


def test_digits_are_8x8_with_ten_classes():
    train, test = data.load("digits")
    assert len(train) + len(test) == 1797
    assert train[0][0].shape == (1, 8, 8)
    assert set(test.tensors[1].tolist()) == set(range(10))


@pytest.mark.parametrize(
    "name, shape",
    [("mnist5k", (1, 28, 28)), ("digits", (1, 8, 8)), ("cifar10", (3, 32, 32))],
)
def test_input_shape(name, shape):
    assert data.input_shape(name) == shape


def test_unknown_dataset_names_the_choices():
    with pytest.raises(
        ValueError, match="name must be one of 'mnist5k'.*got 'imagenet'"
    ):
        data.load("imagenet")
    with pytest.raises(ValueError, match="name must be one of"):
        data.loaders("imagenet")


@pytest.mark.parametrize("batch_size", [0, -3])
def test_batch_size_must_be_positive(batch_size):
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got"):
        data.loaders("digits", batch_size=batch_size)


def test_batch_size_must_be_an_int():
    with pytest.raises(TypeError, match="batch_size"):
        data.loaders("digits", batch_size=2.5)


def test_loaders_with_the_same_seed_give_the_same_batches():
    first = next(iter(data.loaders("digits", batch_size=16, seed=3)[0]))
    again = next(iter(data.loaders("digits", batch_size=16, seed=3)[0]))
    other = next(iter(data.loaders("digits", batch_size=16, seed=4)[0]))
    assert torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])


def test_validation_is_a_stratified_held_out_part_of_the_training_images():
    train_loader, validation_loader, test_loader = data.loaders(
        "mnist5k", batch_size=500, seed=3, validation=500
    )
    held, held_labels = next(iter(validation_loader))
    assert len(train_loader.dataset) == 3500 and len(held) == 500
    assert torch.bincount(held_labels).tolist() == [50] * 10  # stratified
    assert len(test_loader.dataset) == 1000
    # Disjoint from what is trained on, and the same split for the same seed.
    trained = torch.cat([x for x, _ in train_loader])
    rows = {tuple(x.flatten()[::5].tolist()) for x in trained}
    assert not rows & {tuple(x.flatten()[::5].tolist()) for x in held}
    again = next(iter(data.loaders("mnist5k", seed=3, validation=500)[1]))[0]
    assert torch.equal(again[:5], held[:5])


@pytest.mark.parametrize(
    "validation, error",
    [(-1, ValueError), (4000, ValueError), (1.5, TypeError), (True, TypeError)],
)
def test_validation_must_be_a_count_smaller_than_the_training_set(validation, error):
    with pytest.raises(error, match="validation must be"):
        data.loaders("mnist5k", validation=validation)


def test_random_shift_moves_a_single_pixel_by_at_most_two():
    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 4, 4] = 1.0
    dataset = data.RandomShift(
        torch.utils.data.TensorDataset(image, torch.tensor([0])), seed=0
    )
    offsets = set()
    for _ in range(200):
        shifted, _ = dataset[0]
        assert shifted.shape == (1, 9, 9) and shifted.sum() == 1.0
        y, x = (shifted[0] == 1).nonzero()[0].tolist()
        offsets.add((y - 4, x - 4))
    assert offsets == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}


def test_augmented_loader_leaves_the_test_set_alone():
    train_loader, test_loader = data.loaders("digits", batch_size=8, augment=True)
    assert isinstance(train_loader.dataset, data.RandomShift)
    assert not isinstance(test_loader.dataset, data.RandomShift)


# --- the downloaded datasets, exercised on tiny files in their own on-disk formats ------------


def _write_idx(path, array):
    # IDX format (LeCun's MNIST files): magic 0x0000 0x08 (uint8) ndim, big-endian dims, data.
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    with open(path, "wb") as f:
        f.write(header + array.tobytes())


def _write_mnist(root, folder, n_train=12, n_test=5):
    raw = os.path.join(root, folder, "raw")
    os.makedirs(raw)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(
            os.path.join(raw, f"{prefix}-images-idx3-ubyte"),
            rng.integers(0, 256, (n, 28, 28)),
        )
        _write_idx(os.path.join(raw, f"{prefix}-labels-idx1-ubyte"), np.arange(n) % 10)


@pytest.mark.parametrize(
    "name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
)
def test_mnist_format_files_load(tmp_path, name, folder):
    _write_mnist(tmp_path, folder)
    train, test = data.load(name, root=tmp_path)
    assert (len(train), len(test)) == (12, 5)
    image, label = train[3]
    assert image.shape == (1, 28, 28) and label == 3


def _write_cifar10(root, n=6):
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    # Each batch is a pickled dict with "data" (N, 3072) uint8, channel-major, and "labels".
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "labels": list(range(n)),
        }
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(batch, f)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)


def test_cifar10_format_files_load(tmp_path):
    _write_cifar10(tmp_path)
    train, test = data.load("cifar10", root=tmp_path)
    assert (len(train), len(test)) == (30, 6)
    image, label = test[2]
    assert image.shape == (3, 32, 32) and label == 2


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_files_without_download_say_so(tmp_path, name):
    with pytest.raises(
        FileNotFoundError, match="download=True.*offline dataset.*mnist5k"
    ):
        data.load(name, root=tmp_path)


@pytest.mark.parametrize(
    "name, module",
    [
        ("mnist", "torchvision.datasets.mnist"),
        ("fashion_mnist", "torchvision.datasets.mnist"),
        ("cifar10", "torchvision.datasets.utils"),
    ],
)
def test_download_without_network_is_a_clear_error(tmp_path, monkeypatch, name, module):
    import importlib

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    # Stand in for a machine with no network: the fetch fails the way urllib fails offline.
    monkeypatch.setattr(
        importlib.import_module(module), "download_and_extract_archive", no_network
    )
    with pytest.raises(RuntimeError, match="(?s)could not download.*network.*mnist5k"):
        data.load(name, root=tmp_path, download=True)


def test_download_must_be_a_bool():
    with pytest.raises(TypeError, match="download must be True or False"):
        data.load("mnist", download="yes")

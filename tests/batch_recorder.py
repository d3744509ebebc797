"""A callback that records which training samples each process saw: the DDP shard tests."""

import json
from pathlib import Path

import pytorch_lightning as pl
import torch


def row_indices(rows: torch.Tensor, table: torch.Tensor) -> list[int]:
    """The index in ``table`` of each row of ``rows`` (every row must occur in ``table`` exactly once)."""
    match = (rows.flatten(1).cpu()[:, None, :] == table.flatten(1)[None, :, :]).all(dim=2)  # (len(rows), len(table))
    if not bool((match.sum(dim=1) == 1).all()):
        raise AssertionError("a batch row matches no sample, or several, of the whole set")
    return match.int().argmax(dim=1).tolist()


class BatchRecorder(pl.Callback):
    """Writes ``<default_root_dir>/batches_rank<k>.json`` at the end of fit: for every training step the
    indices (into the DataModule's whole CPU ``train`` split) of the samples this rank trained on, and
    the indices of its ``train_eval`` and ``test`` shards."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        data = trainer.datamodule
        self.steps.append(
            {
                "epoch": trainer.current_epoch,
                "batch": batch_idx,
                "step": trainer.global_step,
                "indices": row_indices(batch[0], data.train.x),
            }
        )

    def on_train_end(self, trainer, pl_module) -> None:
        data = trainer.datamodule
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "steps": self.steps,
            "train_eval": row_indices(data.split_on_device("train_eval").x, data.train.x),
            "test": row_indices(data.split_on_device("test").x, data.test.x),
        }
        (Path(trainer.default_root_dir) / f"batches_rank{trainer.global_rank}.json").write_text(json.dumps(record))

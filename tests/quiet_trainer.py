"""The Trainer of the in-process tests: on the CPU, with no logger, checkpoints, progress bar, model
summary or sanity steps unless a test asks for them; with the lean training step, as the CLI runs."""

import pytorch_lightning as pl

from overparam.lean_step import use_lean_step

QUIET = dict(
    accelerator="cpu",
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
)


def quiet_trainer(**settings) -> pl.Trainer:
    """``pl.Trainer(**QUIET, **settings)``, ``settings`` winning, with :func:`use_lean_step`."""
    return use_lean_step(pl.Trainer(**{**QUIET, **settings}))

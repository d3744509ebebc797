"""Run a config through the real command line in this process and return its summary.json."""

import json
from pathlib import Path

from overparam.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run_config(config: str, root: Path, *overrides: str, expect_code: int = 0) -> dict:
    """``scripts/train.py --config ROOT/config --trainer.default_root_dir root *overrides``; its summary."""
    code = main(
        [
            "--config",
            str(ROOT / config),
            "--trainer.default_root_dir",
            str(root),
            "--trainer.enable_progress_bar",
            "false",
            "--checkpoint_every_n_epochs",
            "0",
            *overrides,
        ]
    )
    assert code == expect_code, f"{config} exited with {code}"
    (summary,) = sorted(root.glob("lightning_logs/version_*/summary.json"))[-1:]
    return json.loads(summary.read_text())


def scalars(root: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one TensorBoard tag of the latest run under ``root``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = sorted(root.glob("lightning_logs/version_*"))[-1]
    events = EventAccumulator(str(run), size_guidance={"scalars": 0}).Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]

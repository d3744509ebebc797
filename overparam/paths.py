"""Where the suite's own files are (no heavy imports: the sweep process reads these too)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
#: Loaded under every config: trainer-wide settings only.
BASE_CONFIG = CONFIGS / "base.yaml"
#: The default experiment: what ``scripts/train.py`` runs when no ``--config`` is given.
DEFAULT_CONFIG = CONFIGS / "default.yaml"
TRAIN_SCRIPT = ROOT / "scripts" / "train.py"


def version_folders(root: Path) -> list[Path]:
    """The run folders ``root/lightning_logs/version_K``, by K ascending (other names are no versions)."""
    found = [
        (int(p.name[len("version_") :]), p) for p in (root / "lightning_logs").glob("version_*") if p.name[len("version_") :].isdigit()
    ]
    return [p for _, p in sorted(found)]

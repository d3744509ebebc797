"""The help cache (overparam/help_cache.py): ``scripts/train.py --help`` served from the cache prints
exactly what the full path printed, without importing Lightning; a changed source is never served stale;
what cannot be keyed safely is never recorded."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from overparam import help_cache
from overparam.paths import ROOT, TRAIN_SCRIPT


def full_then_served(cache: Path) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """``train.py --help`` on an empty cache (the full path), then again under ``-X importtime``."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "OMP_NUM_THREADS": "1"}
    full = subprocess.run([sys.executable, str(TRAIN_SCRIPT), "--help"], cwd=ROOT, env=env, capture_output=True, text=True)
    served = subprocess.run(
        [sys.executable, "-X", "importtime", str(TRAIN_SCRIPT), "--help"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    return full, served


def test_served_help_is_byte_identical_to_the_full_path_and_imports_no_lightning(tmp_path):
    for attempt in range(3):  # a source edited between the two runs rightly forces the full path again
        before = help_cache.source_digest()
        full, served = full_then_served(tmp_path / str(attempt))
        if help_cache.source_digest() == before:
            break
    assert full.returncode == 0, full.stderr
    assert "--model.help" in full.stdout and "--data.help" in full.stdout
    assert len(list((tmp_path / str(attempt) / "overparam-bench").glob("help-*.txt"))) == 1
    assert served.returncode == 0
    assert served.stdout == full.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in served.stderr.splitlines() if line.startswith("import time:")}
    assert "overparam.help_cache" in imported and not {"pytorch_lightning", "torch", "jsonargparse"} & imported


@pytest.fixture
def suite(tmp_path, monkeypatch):
    """A stand-in suite of one source file per package and a cache folder, both under ``tmp_path``."""
    root = tmp_path / "suite"
    for package in help_cache.SUITE_PACKAGES:
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text(f'"""{package}"""\n')
    (root / "base.yaml").write_text("seed_everything: 0\n")
    monkeypatch.setattr(help_cache, "ROOT", root)
    monkeypatch.setattr(help_cache, "BASE_CONFIG", root / "base.yaml")
    monkeypatch.setattr(help_cache, "cache_dir", lambda: tmp_path / "cache")
    return root


class FakeFull:
    """The full path: prints ``text`` (and ``to_stderr`` there), then exits like argparse's help."""

    def __init__(self, text: str, code: int = 0, to_stderr: str = "") -> None:
        self.text, self.code, self.to_stderr, self.calls = text, code, to_stderr, 0

    def __call__(self, argv: list[str]) -> int:
        self.calls += 1
        print(self.text)
        print(self.to_stderr, end="", file=sys.stderr)
        raise SystemExit(self.code)


def run(argv, full, capsys) -> tuple[object, str]:
    try:
        code = help_cache.main(argv, full=full)
    except SystemExit as done:
        code = done.code
    return code, capsys.readouterr().out


def test_a_changed_source_file_is_recorded_anew_never_served_stale(suite, capsys):
    first = FakeFull("usage: v1")
    assert run(["--help"], first, capsys) == (0, "usage: v1\n")
    assert run(["--help"], first, capsys) == (0, "usage: v1\n") and first.calls == 1  # served
    (suite / "datamodules" / "__init__.py").write_text('"""datamodules, edited"""\n')
    second = FakeFull("usage: v2")
    assert run(["--help"], second, capsys) == (0, "usage: v2\n") and second.calls == 1  # the full path again
    assert run(["--help"], second, capsys) == (0, "usage: v2\n") and second.calls == 1
    (suite / "base.yaml").write_text("seed_everything: 1\n")
    assert run(["--help"], FakeFull("usage: v3"), capsys) == (0, "usage: v3\n")


def test_the_key_covers_arguments_terminal_width_and_installed_versions(suite, monkeypatch):
    key = help_cache.cache_key(["--help"])
    assert help_cache.cache_key(["--help"]) == key
    assert help_cache.cache_key(["--data", "MNIST", "--help"]) != key
    monkeypatch.setenv("COLUMNS", "123")
    assert help_cache.cache_key(["--help"]) != key
    monkeypatch.delenv("COLUMNS")
    monkeypatch.setattr(help_cache, "installed_distributions", lambda: ["jsonargparse-0.0.dist-info"])
    assert help_cache.cache_key(["--help"]) != key


@pytest.mark.parametrize(
    "argv, full",
    [
        (["--model.lr", "0.1"], FakeFull("a run", code=0)),  # no help asked: never recorded
        (["--config", "configs/default.yaml", "--help"], FakeFull("usage")),  # a config file the key does not hash
        (["--data", "my_module.MyData", "--help"], FakeFull("usage")),  # a module of the user's own
        (["--data", "Nope", "--help"], FakeFull("error: ...", code=2)),  # an error, not a help
        (["--help"], FakeFull("usage", to_stderr="a warning\n")),  # something on stderr the cache would drop
    ],
)
def test_what_the_key_cannot_cover_is_never_recorded(suite, capsys, argv, full):
    for _ in range(2):
        run(argv, full, capsys)
    assert full.calls == 2 and not list((suite.parent / "cache").glob("help-*.txt"))

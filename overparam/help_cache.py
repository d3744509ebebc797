"""``scripts/train.py --help`` (and ``--list``, ``--data.help MNIST``, ...) without importing Lightning.

The full path imports PyTorch Lightning (which imports torchmetrics and torchvision) before it prints
a line: seconds. So the first full run of a command line records what it printed, in a file under the
user's cache folder, and later runs print that file, byte for byte the same, in a fraction of a second.

A recorded text is served only under the key it was recorded under, a SHA-256 of everything the text
can depend on: the exact arguments and ``sys.argv[0]``, the working directory, the terminal width,
the Python executable, version and ``sys.path``, the name and version of every installed distribution
(torch, pytorch_lightning, jsonargparse, ...), the environment variables jsonargparse reads, and the
bytes of every source file of the suite (``overparam``, ``lightning_modules``, ``datamodules``,
``callbacks``) and of ``configs/base.yaml``. Edit any of them and the next ``--help`` runs the full
path again and records anew. A command line that names anything else (a config file, a path, a module
of your own, a value that is not a plain name or number) is never recorded: its text depends on files
the key does not hash. Any failure to read or write the cache falls back to the full path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Callable, Optional

from overparam.paths import BASE_CONFIG, ROOT

#: The suite's packages, whose sources the key hashes (every ``.py`` below them).
SUITE_PACKAGES = ("overparam", "lightning_modules", "datamodules", "callbacks")
#: Top-level modules a class path on a recorded command line may name: the suite and the libraries it builds the help from.
KNOWN_MODULES = (*SUITE_PACKAGES, "torch", "torchvision", "torchmetrics", "pytorch_lightning", "lightning_fabric", "jsonargparse")
#: Environment variables that change what jsonargparse prints (``JSONARGPARSE_DEFAULT_ENV`` adds ENV: lines).
ENV_PREFIXES = ("JSONARGPARSE_", "PL_", "PYTHON", "SPHINX_BUILD", "COMP_")
#: At most this many recorded texts are kept (the oldest go first).
KEEP = 64
PLAIN_VALUE = re.compile(r"[\w.-]*")  # a number, a name or a class path: no path, list, dict or quote


def asks_for_help(argv: list[str]) -> bool:
    """Whether ``argv`` asks for a help text: ``-h``, ``--help``, ``--list`` or a class's ``--X.help``.

    >>> asks_for_help(["--data.help", "MNIST"]), asks_for_help(["--model.lr", "0.1"])
    (True, False)
    """
    return any(a in ("-h", "--help", "--list") or (a.startswith("--") and a.partition("=")[0].endswith(".help")) for a in argv)


def names_only_the_suite(argv: list[str]) -> bool:
    """Whether every argument is an option, a plain value (name, number) or a class path into the
    suite or its libraries, so that the key covers every file the help text is read from.

    >>> names_only_the_suite(["--data", "MNIST", "--model.net.help", "lightning_modules.nets.mlp.TwoLayerMLP", "--help"])
    True
    >>> [names_only_the_suite(a) for a in (["--config", "x.yaml", "-h"], ["--data", "my_data.Set", "-h"], ["--model.lr=1e-3", "-h"])]
    [False, False, True]
    """
    for arg in argv:
        if arg.startswith("--"):
            option, _, value = arg.partition("=")
            if option in ("--config", "--print_config"):
                return False
        elif arg.startswith("-"):
            if arg != "-h":  # -c FILE, and negative numbers too: rare enough to take the full path
                return False
            continue
        else:
            value = arg
        if not PLAIN_VALUE.fullmatch(value) or (value and os.path.exists(value)):
            return False
        top = value.split(".")[0]
        if "." in value and not top.replace("-", "").isdigit() and top not in KNOWN_MODULES:
            return False
    return True


def source_digest() -> str:
    """SHA-256 over the path and bytes of every ``.py`` file of :data:`SUITE_PACKAGES` and of ``configs/base.yaml``."""
    digest = hashlib.sha256()
    files = sorted(p for package in SUITE_PACKAGES for p in (ROOT / package).rglob("*.py"))
    for path in [*files, BASE_CONFIG]:
        digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def installed_distributions() -> list[str]:
    """The ``NAME-VERSION.dist-info`` (and ``.egg-info``) folders on ``sys.path``: every installed
    distribution with its version (torch, pytorch_lightning, jsonargparse, ...), read without importing any."""
    found = []
    for entry in sys.path:
        with contextlib.suppress(OSError):
            found += sorted(name for name in os.listdir(entry or ".") if name.endswith((".dist-info", ".egg-info")))
    return found


def cache_key(argv: list[str]) -> Optional[str]:
    """The key the help text of ``argv`` is recorded under, or ``None`` when ``argv`` asks for no help
    or its text cannot be recorded safely (see the module docstring)."""
    if not asks_for_help(argv) or not names_only_the_suite(argv) or "_ARGCOMPLETE" in os.environ:
        return None
    facts = {
        "argv": [sys.argv[0], *argv],
        "cwd": os.getcwd(),
        "terminal": list(shutil.get_terminal_size()),  # argparse wraps the text to its width
        "python": [sys.executable, sys.version, sys.path],
        "distributions": installed_distributions(),
        "environment": {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)},
        "sources": source_digest(),
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/overparam-bench`` when that variable is set, else platformdirs'
    ``user_cache_dir("overparam-bench")`` when platformdirs is installed, else ``~/.cache/overparam-bench``."""
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "overparam-bench"
    try:
        from platformdirs import user_cache_dir  # noqa: PLC0415 (optional)
    except ImportError:
        return Path.home() / ".cache" / "overparam-bench"
    return Path(user_cache_dir("overparam-bench"))


def cached_text(key: str) -> Optional[str]:
    """The text recorded under ``key``, or ``None`` when there is none (or it cannot be read)."""
    try:
        return (cache_dir() / f"help-{key}.txt").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def record(key: str, text: str) -> None:
    """Write ``text`` under ``key`` atomically (a reader sees the whole text or none), keeping the
    newest :data:`KEEP` texts; a failure leaves the cache as it was."""
    import tempfile  # noqa: PLC0415 (only when recording)

    folder, partial = cache_dir(), None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=folder, prefix=".help-", suffix=".tmp", delete=False) as f:
            partial = f.name
            f.write(text)
        os.replace(partial, folder / f"help-{key}.txt")
        for old in sorted(folder.glob("help-*.txt"), key=lambda p: p.stat().st_mtime, reverse=True)[KEEP:]:
            old.unlink()
    except (OSError, UnicodeEncodeError):
        if partial is not None:
            with contextlib.suppress(OSError):
                os.unlink(partial)


class Tee:
    """A text stream that writes through to ``stream`` and keeps a copy of what was written."""

    def __init__(self, stream) -> None:
        self.stream, self.parts = stream, []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return self.stream.write(text)

    def text(self) -> str:
        return "".join(self.parts)

    def __getattr__(self, name: str):  # flush, isatty, encoding, fileno, ... of the real stream
        return getattr(self.stream, name)


def full_main(argv: list[str]) -> int:
    """``overparam.cli.main(argv)``: the full path, imported only when it runs."""
    from overparam.cli import main  # noqa: PLC0415 (this import is the cost the cache saves)

    return main(argv)


def main(argv: Optional[list[str]] = None, full: Callable[[list[str]], int] = full_main) -> int:
    """``scripts/train.py``: print the recorded help text of ``argv`` (default ``sys.argv[1:]``) when
    there is one under its current key; else run ``full`` and, when it asked for a help text and
    ended with exit code 0 and nothing on stderr, record what it printed."""
    argv = sys.argv[1:] if argv is None else list(argv)
    key = cache_key(argv)
    if key is None:
        return full(argv)
    text = cached_text(key)
    if text is not None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    out, err = Tee(sys.stdout), Tee(sys.stderr)
    sys.stdout, sys.stderr = out, err
    code = 1
    try:
        code = full(argv)
    except SystemExit as done:  # argparse ends a help with exit(0)
        code = done.code
        raise
    finally:
        sys.stdout, sys.stderr = out.stream, err.stream
        if code in (0, None) and not err.text() and out.text():
            record(key, out.text())
    return code

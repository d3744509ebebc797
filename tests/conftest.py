"""Shared fixtures. Tests import their helpers (experiment_runner, tests.diag_cases, ...) through
``pythonpath = . tests`` in setup.cfg."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny nets only lose from threading: one thread is many times faster than two on a busy
    2-core machine. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

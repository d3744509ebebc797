"""The application: command line, run summaries, checkpoints, sweeps, reports and benchmarks.

It sits above the three libraries (``lightning_modules``, ``datamodules``, ``callbacks``) and
imports them; they never import it. Each file in ``scripts/`` is a thin entry point into a module here.
"""

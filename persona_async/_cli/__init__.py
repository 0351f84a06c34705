"""The ``persona-async`` command line: bulk creation with a crash-safe journal, and a demo.

One module per concern: ``_config`` (the TOML file), ``_input`` (JSONL/CSV lines to requests),
``_journal`` (the append-only results and resume state), ``_batch`` (one run: resume rules,
sending, outcomes, signals), ``_progress`` and ``_summary`` (the terminal), ``_demo`` and
``_main`` (the commands).
"""

from ._main import main

__all__ = ["main"]

"""The ``persona-async`` command line: bulk creation with a crash-safe journal, and a demo.

One module per concern: ``_config`` (the TOML file), ``_input`` (JSONL/CSV lines to requests),
``_journal`` (the append-only results and resume state), ``_gate`` (each lane's limiter, and the
switch that stops sending), ``_batch`` (one run: resume rules, sending, outcomes, stopping),
``_progress`` and ``_summary`` (the terminal), ``_estimate`` (``validate``'s forecast), ``_demo``
and ``_main`` (the commands).
"""

from ._main import main

__all__ = ["main"]

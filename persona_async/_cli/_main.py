"""``persona-async``: the command line (``batch``, ``validate``, ``demo``) and its exit codes.

Exit codes: 0 every item ``created`` or ``exists``; 1 any ``failed`` or ``invalid`` (``validate``:
any invalid line); 2 usage, config and journal errors (a journal that cannot be opened, is not
a journal, or stopped accepting records mid-run); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence

from .._providers import Provider, describe_providers
from .._version import __version__
from ._batch import DEFAULT_GRACE, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Batch
from ._check_sources import check_sources
from ._config import ConfigError, load_config
from ._demo import DEFAULT_COUNT, run_demo
from ._estimate import Estimate
from ._gate import RESTART_SLACK, Gate
from ._input import Format, InputError, open_input
from ._items import Invalid, Item, duplicate
from ._journal import Journal
from ._journal_records import JournalError, State, read_resume
from ._progress import Terminal, TerminalLogHandler, progress_wanted

__all__ = ["main"]

EXIT_USAGE = 2
# validate builds providers only for their rules: this placeholder is never sent anywhere.
_VALIDATE_ONLY_KEY = "validate-only"


class UsageError(Exception):
    """The command line names something unusable: exit 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="persona-async",
        description="Create Suno personas in bulk. Providers, by kind, and how much of each "
        f"contract its docs publish: {describe_providers()}.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    batch = commands.add_parser(
        "batch",
        help="send every line of INPUT, journaling each result (resumable)",
        description="Create a persona per line of INPUT. Running the same command again with "
        "the same --out continues the job; a completed create is never sent twice.",
    )
    batch.add_argument("input", metavar="INPUT", help="JSONL or CSV file; - reads JSONL on stdin")
    batch.add_argument("--config", required=True, help="the TOML config with the providers")
    batch.add_argument("--out", required=True, help="the journal (JSONL), created or resumed")
    batch.add_argument("--format", choices=("jsonl", "csv"), help="override the extension")
    _skip_columns_option(batch)
    batch.add_argument(
        "--resend-unknown",
        action="store_true",
        help="send again items whose outcome is unknown on providers without duplicate "
        "detection (crun); check the provider's dashboard first: this may make a second persona",
    )
    batch.add_argument(
        "--grace",
        type=_seconds,
        default=DEFAULT_GRACE,
        metavar="SECONDS",
        help=f"after Ctrl-C, wait this long for requests in flight (default {DEFAULT_GRACE:g})",
    )
    batch.add_argument("--no-progress", action="store_true", help="no live progress line")
    batch.add_argument("-v", "--verbose", action="store_true", help="log lane state changes")
    batch.set_defaults(run=_batch)

    validate = commands.add_parser(
        "validate",
        help="check every line of INPUT; send nothing",
        description="Check every line of INPUT against the config's providers and their rules. "
        "Sends nothing and needs no API key. Then, per lane: the items a batch would send, "
        "those already settled in --out, and how long the rest takes at the configured "
        "limits. Exit 1 if any line is invalid.",
    )
    validate.add_argument("input", metavar="INPUT", help="JSONL or CSV file; - reads stdin")
    validate.add_argument("--config", required=True, help="the TOML config with the providers")
    validate.add_argument("--format", choices=("jsonl", "csv"), help="override the extension")
    _skip_columns_option(validate)
    validate.add_argument(
        "--out", help="the journal a batch would resume: count what it already settles"
    )
    validate.add_argument(
        "--check-sources",
        action="store_true",
        help="also ask each provider's status endpoint whether each line's source song is "
        "ready, running, failed or unknown (needs the keys; sends no create; exit 1 unless all "
        "are ready)",
    )
    validate.set_defaults(run=_validate)

    demo = commands.add_parser(
        "demo",
        help="a batch against the embedded fake provider (no key, no network)",
        description="Run a batch across two providers against the embedded fake provider on "
        "loopback, with rate limits, 429s, a maintenance window and connection resets.",
    )
    demo.add_argument(
        "--count", type=_positive, default=DEFAULT_COUNT, help=f"personas (default {DEFAULT_COUNT})"
    )
    demo.add_argument("--out", help="keep the journal here (a new file)")
    demo.add_argument("--no-progress", action="store_true", help="no live progress line")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    live = progress_wanted(getattr(args, "no_progress", True), sys.stdout)
    terminal = Terminal(sys.stdout, live=live)
    _logging(getattr(args, "verbose", False), terminal)
    try:
        code: int = args.run(args, terminal)
    except KeyboardInterrupt:  # before the run's own signal handling, or where there is none
        print("persona-async: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ConfigError, InputError, JournalError, UsageError) as exc:
        print(f"persona-async: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return code


def _batch(args: argparse.Namespace, terminal: Terminal) -> int:
    config = load_config(args.config)
    gate = Gate(config.shared_limiters())
    providers = config.providers(config.api_keys(), limiter=gate)
    if args.input != "-" and _same_file(args.input, args.out):
        raise UsageError(f"--out {args.out} is the input file; name a separate journal")
    entries = open_input(
        args.input, {p.name: p for p in providers}, _format(args), skip_columns=args.skip_columns
    )
    try:
        # The sends of the dead run's last window count against the new run's.
        horizon = max(p.rate_period for p in providers) + RESTART_SLACK
        journal = Journal.open(args.out, horizon=horizon)
        try:
            _say_resume(journal)
            gate.count_earlier_sends(journal.resume.recent_sends)
            batch = Batch(
                providers=providers,
                client_options=config.client,
                entries=entries,
                journal=journal,
                gate=gate,
                resend_unknown=args.resend_unknown,
                grace=args.grace,
                terminal=terminal,
            )
            return asyncio.run(batch.run())
        finally:
            journal.close()
    finally:
        entries.close()


def _say_resume(journal: Journal) -> None:
    for repair in journal.repairs:
        print(f"persona-async: {journal.path}: {repair}", file=sys.stderr)
    resume = journal.resume
    if not resume.records:
        return
    states = resume.summary()
    settled = states[State.DONE] + states[State.FAILED]
    print(
        f"persona-async: resuming {journal.path}: {resume.records} records, {settled} item(s) "
        f"settled, {states[State.PENDING]} in flight when the last run stopped, "
        f"{states[State.RETRY] + states[State.RETRY_SENT]} to retry, "
        f"{states[State.UNKNOWN]} with an unknown outcome"
        + (f", {n} submitted task(s) to poll" if (n := states[State.SUBMITTED]) else ""),
        file=sys.stderr,
    )


def _validate(args: argparse.Namespace, terminal: Terminal) -> int:
    config = load_config(args.config)
    keys = config.api_keys() if args.check_sources else None
    providers = config.providers(keys or {lane.name: _VALIDATE_ONLY_KEY for lane in config.lanes})
    resume = read_resume(args.out) if args.out is not None else None
    entries = open_input(
        args.input, {p.name: p for p in providers}, _format(args), skip_columns=args.skip_columns
    )
    estimate = Estimate(providers, resume)
    invalid = 0
    first_lines: dict[bytes, int] = {}
    to_check: list[Item] = []
    try:
        for entry in entries:
            if not isinstance(entry, Invalid):
                first = first_lines.setdefault(entry.key, entry.line)
                if first == entry.line:
                    estimate.add(entry)
                    if keys is not None:
                        to_check.append(entry)
                    continue
                entry = duplicate(entry, first)
            invalid += 1
            where = f"{entries.name}:{entry.line}"
            field = f" {entry.field}:" if entry.field else ""
            print(f"{where}:{field} {entry.message}")
    finally:
        entries.close()
    if not estimate.valid and not invalid:
        print(f"no items in {'stdin' if entries.name == '-' else entries.name}")
    print(f"{estimate.valid} valid item(s), {invalid} invalid line(s)")
    print(estimate.render())
    if keys is not None and not _report_sources(providers, to_check, entries.name):
        return EXIT_FAILED
    return EXIT_FAILED if invalid else EXIT_OK


def _report_sources(providers: Sequence[Provider], items: list[Item], name: str) -> bool:
    """Print each line's source state; True when every source is ready."""
    lines = asyncio.run(check_sources({p.name: p for p in providers}, items))
    counts = Counter(line.state for line in lines)
    for line in lines:
        print(f"{name}:{line.item.line}: source {line.state}: {line.detail}")
    states = ("ready", "running", "failed", "unknown")
    print("sources: " + ", ".join(f"{counts[state]} {state}" for state in states))
    return counts["ready"] == len(lines)


def _demo(args: argparse.Namespace, terminal: Terminal) -> int:
    if args.out is not None and os.path.exists(args.out):
        raise UsageError(f"--out {args.out} exists; the demo writes a new journal")
    return asyncio.run(run_demo(args.count, out=args.out, terminal=terminal))


def _skip_columns_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--skip-columns",
        type=_column_names,
        default=(),
        metavar="NAMES",
        help="comma-separated extra CSV columns (or JSONL fields) to read past, e.g. notes; "
        "any other unknown column is refused",
    )


def _column_names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError("must be column names separated by commas")
    return names


def _format(args: argparse.Namespace) -> Format | None:
    fmt: Format | None = args.format
    return fmt


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _logging(verbose: bool, terminal: Terminal) -> None:
    logger = logging.getLogger("persona_async")
    if verbose:
        # Through the terminal's writer: a log line never lands on the end of the live line.
        handler = TerminalLogHandler(terminal, sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    else:
        # Lane state changes are in the progress line and the summary; without this, Python's
        # last-resort handler would print each warning over the progress line.
        logger.addHandler(logging.NullHandler())


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be a number of seconds >= 0")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value

"""Run a :class:`~persona_async.testing.FakeProvider` in its own process.

::

    python -m persona_async.testing --rate-limit 20 --rate-period 10 --fault-rate 0.01 --seed 1
    python -m persona_async.testing --song task_1=clip_1:95 --song-ready-in 30 --maintenance 10

Once listening it prints exactly one line, ``READY http://127.0.0.1:PORT``, to stdout and
flushes it, so a parent process can read the base URL; it then serves until SIGTERM or SIGINT
and exits with status 0. ``GET /_fake/stats`` on that URL reports what it saw and
``POST /_fake/reset`` clears it. Individual requests are not kept (nobody outside the process
could read them), so memory stays flat however long a benchmark runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

from ._fake import DEFAULT_API_KEY, DEFAULT_RATE_PERIOD, RATE_SHAPES, FakeProvider
from ._fake._registry import describe_contracts

_EPILOG = """\
contracts (one base URL serves all of them; point every provider's base_url at it):
{contracts}

readiness:
  Once listening, it prints exactly one line to stdout and flushes it:
      READY http://127.0.0.1:PORT
  Read that line to learn the base URL (with --port 0 the port is picked for you). Nothing
  else is printed to stdout. It then serves until SIGTERM or SIGINT and exits with status 0.

what it saw:
  GET  /_fake/stats   JSON: request_count, requests_by_kind, response_codes, creations
                      (personas created), personas, duplicate_creations (a second persona
                      for one audio id), window_violations (requests over --rate-limit),
                      max_concurrent, in_flight, connection_resets, faults_served, ...
  POST /_fake/reset   forget all of it (counts, windows, stored personas)

examples:
  python -m persona_async.testing --rate-limit 20 --rate-period 10 --api-key my-test-key
  python -m persona_async.testing --song task_1=clip_1:95 --song-ready-in 30 \\
      --failing-song task_2 --task-seconds 5 --failing-task clip_9 \\
      --maintenance 10 --maintenance-at 60
"""


def _song(spec: str) -> tuple[str, dict[str, float] | None]:
    """``TASK_ID[=CLIP:SECONDS[,CLIP:SECONDS...]]`` -> (task id, clips or None for the default)."""
    task_id, _, clips = spec.partition("=")
    if not task_id.strip():
        raise argparse.ArgumentTypeError(f"{spec!r}: the task id is empty")
    if not clips:
        return task_id, None
    parsed: dict[str, float] = {}
    for item in clips.split(","):
        clip, _, seconds = item.partition(":")
        try:
            duration = float(seconds)
        except ValueError:
            duration = -1.0
        if not clip or not duration > 0:
            raise argparse.ArgumentTypeError(
                f"{spec!r}: each clip is CLIP:SECONDS with SECONDS > 0, got {item!r}"
            )
        parsed[clip] = duration
    return task_id, parsed


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m persona_async.testing",
        description="Serve a fake Suno persona provider on loopback, speaking every contract the "
        "SDK supports (listed below).",
        epilog=_EPILOG.format(contracts=describe_contracts()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    parser.add_argument(
        "--rate-limit", type=int, default=None, metavar="N", help="requests per key per window"
    )
    parser.add_argument(
        "--rate-period",
        type=float,
        default=DEFAULT_RATE_PERIOD,
        metavar="T",
        help="rate window in seconds",
    )
    parser.add_argument(
        "--rate-shape",
        choices=RATE_SHAPES,
        default="sliding",
        help="how the limit counts: any window of T seconds (sliding), a counter reset every T "
        "seconds (fixed), a token bucket of N refilled over T (bucket), or one request per T/N "
        "seconds and no burst (leaky, as nginx's limit_req without burst)",
    )
    parser.add_argument(
        "--count-rejected",
        action="store_true",
        help="rejected requests count against the rate window too",
    )
    parser.add_argument(
        "--rate-limit-http", action="store_true", help="send rate-limit rejections as HTTP 429"
    )
    parser.add_argument(
        "--retry-after", type=float, default=None, metavar="S", help="Retry-After seconds on 429"
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, metavar="S", help="delay every answer this long"
    )
    parser.add_argument(
        "--api-key",
        dest="api_keys",
        action="extend",
        nargs="+",
        metavar="K",
        help=f"accepted API key(s); default {DEFAULT_API_KEY!r}",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for random faults")
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="chance per request of a random fault (429, 500, 502 HTML, reset after create)",
    )
    down = parser.add_argument_group("maintenance")
    down.add_argument(
        "--maintenance",
        type=_seconds,
        default=0.0,
        metavar="S",
        help="answer every create and persona-task query with 455 (503 where errors are HTTP "
        "statuses) for S seconds",
    )
    down.add_argument(
        "--maintenance-at",
        type=_seconds,
        default=0.0,
        metavar="A",
        help="start that window A seconds after the fake starts (default 0: at once)",
    )
    songs = parser.add_argument_group(
        "source songs (for wait_for_source and persona-async validate --check-sources)"
    )
    songs.add_argument(
        "--song",
        dest="songs",
        action="append",
        type=_song,
        default=[],
        metavar="TASK_ID[=CLIP:SECONDS,...]",
        help="a music task every status endpoint answers for, with its clips and their lengths "
        "(default one clip, clip_1, of 120 s); repeat for more songs",
    )
    songs.add_argument(
        "--song-ready-in",
        type=_seconds,
        default=0.0,
        metavar="S",
        help="the songs finish S seconds after the fake starts (default 0: finished)",
    )
    songs.add_argument(
        "--failing-song",
        dest="failing_songs",
        action="append",
        default=[],
        metavar="TASK_ID",
        help="a music task that fails (its status says so; a create from it is refused)",
    )
    tasks = parser.add_argument_group("async persona tasks (kie-jobs, evolink)")
    tasks.add_argument(
        "--task-seconds",
        type=_seconds,
        default=0.0,
        metavar="S",
        help="a submitted persona task runs S seconds before its persona is ready",
    )
    tasks.add_argument(
        "--failing-task",
        dest="failing_tasks",
        action="append",
        default=[],
        metavar="CLIP_ID",
        help="persona tasks for this clip id fail; repeatable",
    )
    return parser


async def _serve(fake: FakeProvider, args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Not available on Windows; Ctrl-C then ends the run through KeyboardInterrupt.
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    async with fake:
        # Songs and the maintenance window count from here, when requests can arrive.
        for task_id, clips in args.songs:
            fake.songs.add(task_id, clips=clips, ready_in=args.song_ready_in)
        for task_id in args.failing_songs:
            fake.songs.add(task_id, ready_in=args.song_ready_in, fails=True)
        if args.maintenance:
            if args.maintenance_at:
                loop.call_later(args.maintenance_at, fake.maintenance, args.maintenance)
            else:
                fake.maintenance(args.maintenance)
        print(f"READY {fake.url}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, serve until signalled, and return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        fake = FakeProvider(
            api_keys=args.api_keys or (DEFAULT_API_KEY,),
            host=args.host,
            port=args.port,
            rate_limit=args.rate_limit,
            rate_period=args.rate_period,
            rate_shape=args.rate_shape,
            count_rejected=args.count_rejected,
            rate_limit_http=args.rate_limit_http,
            retry_after=args.retry_after,
            latency=args.latency,
            fault_rate=args.fault_rate,
            seed=args.seed,
            record_requests=False,
        )
    except ValueError as exc:
        parser.error(str(exc))
    fake.task_seconds = args.task_seconds
    fake.failing_tasks.update(args.failing_tasks)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(fake, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run a :class:`~persona_async.testing.FakeProvider` in its own process.

::

    python -m persona_async.testing --rate-limit 20 --rate-period 10 --fault-rate 0.01 --seed 1

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

_EPILOG = """\
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

example:
  python -m persona_async.testing --rate-limit 20 --rate-period 10 --api-key my-test-key
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m persona_async.testing",
        description="Serve a fake crun + sunoapi.org-family persona provider on loopback.",
        epilog=_EPILOG,
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
    return parser


async def _serve(fake: FakeProvider) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Not available on Windows; Ctrl-C then ends the run through KeyboardInterrupt.
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    async with fake:
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
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(fake))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What ``wait_for_source`` costs a provider: status queries per song, creates, elapsed time.

    python benchmarks/bench_sources.py                  # 1000 requests over 20 songs (~15 s)
    python benchmarks/bench_sources.py --requests 5000 --songs 50

Songs finish at random between 1 and 5 s after the start (seeded); every request waits for its
song with the default ``PollPolicy`` and is created once. Printed: status queries in all and per
song, creates, creates that reached a song before it finished (must be 0), status queries that
broke the family's "3 per second per task" (must be 0), and the polls a song that never finishes
costs over a 600 s wait under the default schedule. The fake runs in this process (its songs are
configured through its Python API); nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

from persona_async import KieProvider, PersonaClient, PersonaRequest, PollPolicy
from persona_async.testing import FakeProvider

CREATE_PATH = "/api/v1/generate/generate-persona"


def schedule_polls(policy: PollPolicy, wait: float) -> int:
    """Polls one never-finishing song costs over ``wait`` seconds (jitter at its mean)."""
    t, n = 0.0, 1
    while True:
        t += min(policy.max_interval, policy.initial * policy.factor ** (n - 1))
        if t > wait:
            return n
        n += 1


async def run(requests: int, songs: int, seed: int) -> None:
    rng = random.Random(seed)
    async with FakeProvider() as fake:
        ready_at = {}
        for s in range(songs):
            song = fake.songs.add(
                f"task_{s}",
                clips={f"clip_{s}_{i}": 120.0 for i in range(requests // songs + 1)},
                ready_in=rng.uniform(1.0, 5.0),
            )
            ready_at[song.task_id] = song.added + song.ready_in
        batch = [
            PersonaRequest(f"task_{i % songs}", f"clip_{i % songs}_{i // songs}", "N", "D")
            for i in range(requests)
        ]
        provider = KieProvider(
            api_key=fake.api_key, base_url=fake.url, rate_limit=None, wait_for_source=60
        )
        start = time.monotonic()
        async with PersonaClient([provider]) as client:
            outcomes = [o async for o in client.create_many(batch)]
        elapsed = time.monotonic() - start
    queries = fake.songs.queries(fake.requests)
    creates = [r for r in fake.requests if r.path == CREATE_PATH]
    early = sum(r.arrived < ready_at[(r.json or {})["taskId"]] for r in creates)
    print(f"requests {requests}, songs {songs} (finishing 1-5 s after start), seed {seed}")
    print(f"  created            {sum(o.ok for o in outcomes)} / {requests}")
    print(f"  creates sent       {len(creates)}")
    print(f"  creates too early  {early}")
    print(f"  status queries     {queries} ({queries / songs:.1f} per song)")
    print(f"  over 3/s per task  {fake.songs.too_fast}")
    print(f"  elapsed            {elapsed:.1f} s")
    policy = PollPolicy()
    print(
        f"  default schedule: a song that never finishes costs "
        f"{schedule_polls(policy, 600.0)} polls over a 600 s wait"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--songs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.songs, args.seed))


if __name__ == "__main__":
    main()

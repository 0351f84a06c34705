"""What the CLI says is true, and a script reading its output, exit code or journal gets what it
needs: unknown outcomes counted as such, ids where they can be had, empty or odd inputs named.
Real subprocesses against a real ``FakeProvider`` on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
from _cli_support import (
    batch_args,
    config_text,
    fake_provider,
    identity,
    items,
    last_records,
    read_journal,
    run_cli,
    write_jsonl,
)

from persona_async.testing import Fault

pytestmark = pytest.mark.anyio

# A provider echoing a 1 MB description: far over what the client reads of a reply.
HUGE_REPLY = b'{"code": 200, "msg": "ok", "data": {"description": "' + b"x" * 1_000_000 + b'"}}'


async def test_a_reply_too_large_to_read_is_an_unknown_outcome_that_resend_unknown_resends(
    tmp_path: Path,
) -> None:
    rows = items(2)  # one crun item, one kie item
    write_jsonl(tmp_path / "in.jsonl", rows)
    journal = tmp_path / "results.jsonl"
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url))
        fake.inject(Fault.body(HUGE_REPLY), path="crun")
        fake.inject(Fault.body(HUGE_REPLY), path="family")
        first = await run_cli(*batch_args(tmp_path))
        after_first = last_records(read_journal(journal))
        fake.requests.clear()
        again = await run_cli(*batch_args(tmp_path))
        sent_again = len(fake.requests)
        resent = await run_cli(*batch_args(tmp_path, "--resend-unknown"))

    crun, kie = (after_first[identity(row)] for row in rows)
    # crun detects no duplicates: the provider took the request, its outcome is unknown.
    assert crun["status"] == "failed"
    assert crun["error"]["type"] == "OutcomeUnknownError"
    assert crun["error"]["next_run_retries"] is False
    assert "--resend-unknown" in crun["error"]["message"]
    assert b"1 item(s) have an unknown outcome (OutcomeUnknownError)" in first.stdout, first.stdout
    assert first.returncode == 1
    # The family answers a resend with 409 when the first made it: the lane resent at once.
    assert kie["status"] == "created", kie
    # Not sent again without --resend-unknown; counted as unknown, not as failed for good.
    assert sent_again == 0
    assert b"skipped, settled by an earlier run: 1 created or exists, 1 outcome unknown" in (
        again.stdout
    ), again.stdout
    assert resent.returncode == 0, resent.stdout
    assert last_records(read_journal(journal))[identity(rows[0])]["status"] == "created"

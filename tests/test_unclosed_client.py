"""A client left open says so by default, not only under ``-X dev``: the program below forgets
``aclose()``, and its stderr (default warning filters, no logging set up) names the mistake."""

from __future__ import annotations

import subprocess
import sys
import textwrap

FORGETFUL = textwrap.dedent(
    """
    import asyncio

    from persona_async import CrunProvider, PersonaClient, PersonaRequest
    from persona_async.testing import FakeProvider


    async def main(close):
        async with FakeProvider() as fake:
            provider = CrunProvider(api_key=fake.api_key, base_url=fake.url)
            client = PersonaClient([provider])
            await client.create_persona(PersonaRequest("t", "a", "n", "d"))
            if close:
                await client.aclose()


    asyncio.run(main(close=CLOSE))
    """
)


def run(close: bool) -> str:
    done = subprocess.run(
        [sys.executable, "-c", FORGETFUL.replace("CLOSE", str(close))],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stderr


def test_a_client_never_closed_warns_with_default_settings() -> None:
    assert "PersonaClient was not closed" in run(close=False)


def test_a_closed_client_warns_of_nothing() -> None:
    assert run(close=True) == ""

"""Test doubles for code that talks to Suno persona providers.

:class:`FakeProvider` is a real HTTP server on loopback that speaks both the crun and the
sunoapi.org family contracts, with rate limits of three shapes (``RATE_SHAPES``), maintenance
and injectable :class:`Fault` s; every request it saw is a :class:`RequestRecord`.
``python -m persona_async.testing`` runs one in its own process.
"""

from ._fake import RATE_SHAPES, FakeProvider, Fault, RateShape, RequestRecord

__all__ = ["RATE_SHAPES", "FakeProvider", "Fault", "RateShape", "RequestRecord"]

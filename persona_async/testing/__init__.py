"""Test doubles for code that talks to Suno persona providers.

:class:`FakeProvider` is a real HTTP server on loopback that speaks every supported provider
contract (crun, the sunoapi.org family, AceData, the Suno-API gateways, TTAPI, MountSea, and the
async tasks of kie's market route and Evolink), with rate limits of three shapes
(``RATE_SHAPES``), maintenance and injectable :class:`Fault` s; every request it saw is a
:class:`RequestRecord`.
``python -m persona_async.testing`` runs one in its own process.
"""

from ._fake import RATE_SHAPES, FakeProvider, Fault, RateShape, RequestRecord

__all__ = ["RATE_SHAPES", "FakeProvider", "Fault", "RateShape", "RequestRecord"]

"""The fake provider: one module per contract (its status endpoint included), listed in
``_registry``; the server (``_server``, answering through ``_behaviour``) iterates that list."""

from ._faults import DEFAULT_FAULT_MIX, Fault
from ._limits import RATE_SHAPES, RateShape, RateWindow
from ._server import FakeProvider
from ._wire import DEFAULT_API_KEY, DEFAULT_RATE_PERIOD, RequestRecord
from .crun import CRUN_PATH
from .family import FAMILY_PATH

__all__ = [
    "CRUN_PATH",
    "DEFAULT_API_KEY",
    "DEFAULT_FAULT_MIX",
    "DEFAULT_RATE_PERIOD",
    "FAMILY_PATH",
    "RATE_SHAPES",
    "FakeProvider",
    "Fault",
    "RateShape",
    "RateWindow",
    "RequestRecord",
]

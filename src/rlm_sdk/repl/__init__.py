"""The REPL: an isolated Python worker process holding the context, and the client that drives it.

The worker (``_worker.py``) imports nothing from the rest of the package; the client knows nothing
of prompts or providers: it runs cells and forwards the worker's sub-calls to a handler. A
:class:`ForkServer` shared by many sessions forks their workers from one warm process.
"""

from ._client import IsolationMode, REPLSession
from ._process import ForkServer
from ._types import CellError, CellResult, ContextData, SubCallHandler, SubCallRequest

__all__ = [
    "CellError",
    "CellResult",
    "ContextData",
    "ForkServer",
    "IsolationMode",
    "REPLSession",
    "SubCallHandler",
    "SubCallRequest",
]

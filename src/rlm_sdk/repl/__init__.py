"""The REPL: an isolated Python worker process holding the context, and the client that drives it.

The worker (``_worker.py``) imports nothing from the rest of the package; the client knows nothing
of prompts or providers: it runs cells and forwards the worker's sub-calls to a handler.
"""

from ._client import REPLSession
from ._types import CellError, CellResult, ContextData, SubCallHandler, SubCallRequest

__all__ = [
    "CellError",
    "CellResult",
    "ContextData",
    "REPLSession",
    "SubCallHandler",
    "SubCallRequest",
]

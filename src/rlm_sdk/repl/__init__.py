"""The REPL: an isolated Python worker process holding the context, and the client that drives it.

Three programs share this directory. The worker (``_worker.py``, with ``_capture.py``) and the
fork server (``_forkserver.py``) run as ``python -I`` scripts and import nothing from the rest
of the package but the wire format (``_wire.py``) and the sandbox (``_sandbox.py``), which are
stdlib-only. The client (``_client.py``, ``_supervisor.py``, ``_process.py``, ``_context.py``)
knows nothing of prompts or providers: it runs cells and forwards the worker's sub-calls to a
handler. A :class:`ForkServer` shared by many sessions forks their workers from one warm
process; :class:`REPLOptions` says what a worker may do, and its bounds.
"""

from ._client import REPLSession
from ._corpus import Corpus
from ._process import ForkServer
from ._types import (
    CellError,
    CellResult,
    ContextData,
    IsolationMode,
    REPLOptions,
    SubCallHandler,
    SubCallRequest,
)

__all__ = [
    "CellError",
    "CellResult",
    "ContextData",
    "Corpus",
    "ForkServer",
    "IsolationMode",
    "REPLOptions",
    "REPLSession",
    "SubCallHandler",
    "SubCallRequest",
]

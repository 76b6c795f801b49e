"""TEST/DEMO doubles: offline providers, a fake OpenAI-compatible server, the NIAH stand-in.

Nothing here talks to a real model. :class:`ScriptedProvider` replies from a script, in
process; :class:`FakeChatServer` is a real HTTP server on 127.0.0.1 for integration tests,
demos and benchmarks of the HTTP providers; :func:`niah_policy` plays the model's part in the
needle-in-a-haystack demo, answering only from what the REPL printed.
"""

from __future__ import annotations

from ._fake_server import FakeChatServer, RecordedRequest, ServerReply
from ._niah import NIAH_QUERY, make_haystack, niah_policy
from ._scripted import ReplyFunction, ScriptedProvider, tool_reply

__all__ = [
    "FakeChatServer",
    "NIAH_QUERY",
    "RecordedRequest",
    "ReplyFunction",
    "ScriptedProvider",
    "ServerReply",
    "make_haystack",
    "niah_policy",
    "tool_reply",
]

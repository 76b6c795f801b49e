"""TEST/DEMO doubles: offline providers and a fake OpenAI-compatible server.

Nothing here talks to a real model. :class:`ScriptedProvider` replies from a script, in
process; :class:`FakeChatServer` is a real HTTP server on 127.0.0.1 for integration tests,
demos and benchmarks of the HTTP providers.
"""

from __future__ import annotations

from ._fake_server import FakeChatServer, RecordedRequest, ServerReply
from ._scripted import ReplyFunction, ScriptedProvider

__all__ = ["FakeChatServer", "RecordedRequest", "ReplyFunction", "ScriptedProvider", "ServerReply"]

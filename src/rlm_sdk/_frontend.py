"""The small internal API of the front ends (``rlm_sdk.cli`` and ``rlm_sdk.server``).

Front ends are users of the SDK: they import the public API (``rlm_sdk``,
``rlm_sdk.providers``, ``rlm_sdk.repl``, ``rlm_sdk.testing``) and, where they need more,
only the names below. Nothing here is public; it may change with any release.
``tests/test_imports.py`` keeps the front ends to these imports.

* :func:`get_logger`: the SDK's logging shim (structlog when configured, else stdlib).
* :func:`load_settings`: the environment and ``.env``, as the SDK reads them.
* :func:`messages_to_run` / :func:`to_chat_completion`: the chat-completion mapping the
  drop-in uses, for ``/v1/chat/completions``; :func:`reply_format_shape` reads its
  ``response_format`` into an ``output_type`` and :func:`output_json` writes a typed answer.
* :func:`console_view`: the live terminal view (``rich``, from the ``cli`` extra).
* :func:`configure_tracing`: an OpenTelemetry SDK exporting OTLP, for ``serve --otel``.
* The defaults the front ends show or offer.
"""

from __future__ import annotations

import os
from typing import IO, TYPE_CHECKING

from ._chat import messages_to_run, to_chat_completion
from ._constants import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_ITERATIONS,
    DEMO_ANTHROPIC_MODEL,
    DEMO_OPENAI_MODEL,
)
from ._exceptions import ConfigurationError
from ._logging import get_logger
from ._output import output_json, reply_format_shape
from ._settings import load_settings

if TYPE_CHECKING:
    from ._console import ConsoleView

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_ITERATIONS",
    "DEMO_ANTHROPIC_MODEL",
    "DEMO_OPENAI_MODEL",
    "configure_tracing",
    "console_view",
    "get_logger",
    "load_settings",
    "messages_to_run",
    "output_json",
    "reply_format_shape",
    "to_chat_completion",
]


def console_view(
    *, file: IO[str] | None = None, width: int | None = None, threaded: bool = True
) -> ConsoleView:
    """A live console view of events (see ``rlm_sdk._console``).

    Raises:
        ConfigurationError: ``rich`` is not installed; the message names the extra.
    """
    try:
        from ._console import ConsoleView
    except ImportError as err:
        raise ConfigurationError(
            "the console view needs rich, which is not installed: pip install 'rlm-sdk[cli]'"
        ) from err
    return ConsoleView(file=file, width=width, threaded=threaded)


_OTEL_INSTALL = (
    "tracing needs OpenTelemetry's SDK and OTLP exporter: "
    "pip install 'rlm-sdk[otel]' opentelemetry-sdk opentelemetry-exporter-otlp-proto-http"
)


def configure_tracing() -> str:
    """Make sure spans go somewhere: unless the process already has an OpenTelemetry SDK
    (``opentelemetry-instrument``, or an application that set one), install one exporting
    OTLP over HTTP, configured by the standard ``OTEL_*`` variables. Front ends only: a
    library never configures the SDK. Returns where spans go, for the start-up banner.

    Raises:
        ConfigurationError: the SDK or the exporter is not installed; the message says how.
    """
    try:
        from .otel import _configure_sdk
    except ImportError as err:
        raise ConfigurationError(_OTEL_INSTALL) from err
    try:
        installed = _configure_sdk()
    except ImportError as err:
        raise ConfigurationError(_OTEL_INSTALL) from err
    if not installed:
        return "through the tracer provider already configured"
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318").rstrip("/")
        + "/v1/traces"
    )
    return f"OTLP over HTTP to {endpoint}"

"""``rlm-sdk serve``: a local web page to run and watch RLMs, and an OpenAI-compatible API.

A front end, like the CLI: it uses the public API, renders events, speaks HTTP. Starlette and
uvicorn are the optional extra ``rlm-sdk[server]``, so they are imported only when an app is
built or served; importing this package (as the CLI does for ``serve``) needs neither.

Bound to loopback (the default) the server answers only to ``Host: localhost``,
``127.0.0.1`` or ``[::1]`` with its port, which stops DNS-rebinding pages from driving it;
bound elsewhere it warns that anyone who can reach it can spend your provider keys.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import TYPE_CHECKING

from ._config import (
    ANY_HOST,
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_MB,
    DEFAULT_PORT,
    MODEL_PREFIX,
    OFFLINE_MODEL,
    ServerConfig,
    is_loopback,
    loopback_hosts,
)

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = [
    "MODEL_PREFIX",
    "ServerConfig",
    "add_serve_parser",
    "create_app",
    "loopback_hosts",
    "serve",
]

_INSTALL_HINT = "rlm-sdk: the server needs its extra: pip install 'rlm-sdk[server]'"
_MODELS_ENV = "RLM_SERVE_MODELS"


def create_app(config: ServerConfig) -> Starlette:
    """The Starlette app serving the page, its API and ``/v1`` for ``config``.

    Run it under any ASGI server with lifespan support (the run registry lives in it).
    """
    from ._app import build_app

    return build_app(config)


def add_serve_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Define the ``serve`` subcommand's arguments on the CLI's subparsers."""
    p = subparsers.add_parser(
        "serve",
        help="a local web page to run and watch RLMs, and an OpenAI-compatible API",
        description=(
            "Serve a web page for running RLMs and watching them live, and an OpenAI-compatible "
            f"API at /v1 (model names: {MODEL_PREFIX}MODEL)."
        ),
    )
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument(
        "--models",
        default=None,
        help=f"comma-separated models to offer, first = default root, second = default sub model "
        f"(default: {_MODELS_ENV})",
    )
    p.add_argument(
        "--max-body-mb",
        type=float,
        default=DEFAULT_MAX_BODY_MB,
        help=f"largest upload (context or trajectory) in MB (default {DEFAULT_MAX_BODY_MB})",
    )
    p.add_argument("--max-iterations", type=int, default=None, help="default turns per run")
    p.add_argument("--max-depth", type=int, default=None, help="default recursion depth")
    p.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        metavar="N",
        help="cap on the tokens of each model reply, in every run (default: the server's own)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop each run after this much wall time",
    )
    p.add_argument(
        "--max-sessions",
        type=int,
        default=None,
        metavar="N",
        help="conversations kept at once for clients sending the X-RLM-Session header, "
        "each holding a REPL worker (default 16; 0 refuses the header)",
    )
    p.add_argument(
        "--session-idle-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="close a conversation idle this long and reap its worker (default 600)",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="serve only a scripted demo stand-in; no language model is called",
    )
    p.add_argument(
        "--otel",
        action="store_true",
        help="send each run's spans to OpenTelemetry over OTLP (configured by the standard "
        "OTEL_* variables, e.g. OTEL_EXPORTER_OTLP_ENDPOINT) and honour incoming traceparent "
        "headers; needs the otel extra, opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http",
    )


def _config_from_args(args: argparse.Namespace, port: int) -> ServerConfig:
    defaults: dict[str, float] = {}
    if args.max_sessions is not None:
        defaults["max_sessions"] = args.max_sessions
    if args.session_idle_timeout is not None:
        defaults["session_idle_timeout"] = args.session_idle_timeout
    if args.max_iterations is not None:
        defaults["default_max_iterations"] = args.max_iterations
    if args.max_depth is not None:
        defaults["default_max_depth"] = args.max_depth
    common = {
        "max_body_bytes": int(args.max_body_mb * 1024 * 1024),
        "allowed_hosts": loopback_hosts(port) if is_loopback(args.host) else [ANY_HOST],
        "max_tokens": args.max_tokens,
        "max_wall_time": args.timeout,
        "otel": args.otel,
        **defaults,
    }
    if args.offline:
        from rlm_sdk.testing import ScriptedProvider, niah_policy

        return ServerConfig(
            models=[OFFLINE_MODEL], provider=ScriptedProvider(niah_policy), offline=True, **common
        )
    names = args.models or os.environ.get(_MODELS_ENV, "")
    models = [m.strip() for m in names.split(",") if m.strip()]
    if not models:
        raise SystemExit(
            f"rlm-sdk serve: no models: pass --models openai:gpt-5-mini,openai:gpt-5-nano, "
            f"set {_MODELS_ENV}, or use --offline for the scripted demo"
        )
    return ServerConfig(models=models, **common)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), port), family=family)
    except OSError as err:
        raise SystemExit(f"rlm-sdk serve: cannot listen on {host}:{port}: {err.strerror}") from err


def serve(args: argparse.Namespace) -> int:
    """Run the server until interrupted; returns the exit status."""
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        print(_INSTALL_HINT, file=sys.stderr)
        return 1
    from pydantic import ValidationError

    from rlm_sdk import ConfigurationError
    from rlm_sdk._frontend import configure_tracing

    sock = _bind(args.host, args.port)
    with sock:
        port = sock.getsockname()[1]
        try:
            config = _config_from_args(args, port)
        except ValidationError as err:
            print(f"rlm-sdk serve: {err.errors()[0]['msg']}", file=sys.stderr)
            return 2
        try:
            tracing = configure_tracing() if config.otel else None
        except ConfigurationError as err:
            print(f"rlm-sdk serve: {err}", file=sys.stderr)
            return 1
        shown = f"[{args.host.strip('[]')}]" if ":" in args.host.strip("[]") else args.host
        print(f"rlm-sdk serve: http://{shown}:{port}/  (OpenAI-compatible API at /v1)")
        print(f"  models: {', '.join(config.models)}  (as {MODEL_PREFIX}MODEL on /v1)")
        if config.offline:
            print(
                "  OFFLINE DEMO: no language model is called. A scripted test/demo double plays the "
                "model's part; it only knows how to find a magic number (try the demo haystack)."
            )
        if tracing is not None:
            print(f"  tracing: OpenTelemetry spans, {tracing}")
        if config.allowed_hosts == [ANY_HOST]:
            print(
                f"WARNING: bound to {args.host}, which is not a loopback address: anyone who can "
                "reach it can start runs on your provider keys and read every run. Host-header "
                "checks are off. Bind to 127.0.0.1 unless you mean this.",
                file=sys.stderr,
            )
        server = uvicorn.Server(
            uvicorn.Config(create_app(config), log_level="warning", timeout_graceful_shutdown=5)
        )
        server.run(sockets=[sock])
    return 0

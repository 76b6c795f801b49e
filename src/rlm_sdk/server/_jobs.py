"""From a client's choices to a run: validated against the server's config, then a job.

The page and ``/v1/chat/completions`` name models, iterations and depth in different places
(a URL query, a JSON body), but both end here, so both get the same bounds and the same
errors, and a run is built the same way for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlm_sdk import Event, Limits, RecursiveLM, RLMResult
from rlm_sdk.providers import Provider
from rlm_sdk.repl import ContextData, ForkServer

from ._config import ServerConfig
from ._http import ApiError
from ._runs import EventSink, Job

__all__ = [
    "RunOptions",
    "ignore_events",
    "make_job",
    "make_rlm",
    "parse_options",
    "unknown_model",
]


@dataclass(frozen=True)
class RunOptions:
    """What one run uses; every field already checked against the config."""

    model: str
    sub_model: str
    max_iterations: int
    max_depth: int


def unknown_model(name: str, offered: list[str], *, param: str = "model") -> ApiError:
    return ApiError(
        404,
        f"the model {name!r} is not offered by this server; it offers: " + ", ".join(offered),
        param=param,
        code="model_not_found",
    )


def _bounded_int(value: Any, *, name: str, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    problem = ApiError(400, f"{name} must be a whole number from {low} to {high}", param=name)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise problem
    try:
        number = int(value)
    except ValueError:
        raise problem from None
    if not low <= number <= high:
        raise problem
    return number


def parse_options(
    config: ServerConfig,
    *,
    model: str | None,
    sub_model: Any = None,
    max_iterations: Any = None,
    max_depth: Any = None,
    prefix: str = "",
) -> RunOptions:
    """Check a client's choices against ``config``; ``prefix`` names where they came from."""
    root = model or config.models[0]
    if root not in config.models:
        raise unknown_model(root, config.models)
    if sub_model is not None and not isinstance(sub_model, str):
        raise ApiError(400, f"{prefix}sub_model must be a string", param=f"{prefix}sub_model")
    sub = sub_model or config.default_sub_model
    if sub not in config.models:
        raise unknown_model(sub, config.models, param=f"{prefix}sub_model")
    return RunOptions(
        model=root,
        sub_model=sub,
        max_iterations=_bounded_int(
            max_iterations,
            name=f"{prefix}max_iterations",
            default=config.default_max_iterations,
            low=1,
            high=config.max_iterations_cap,
        ),
        max_depth=_bounded_int(
            max_depth,
            name=f"{prefix}max_depth",
            default=config.default_max_depth,
            low=1,
            high=config.max_depth_cap,
        ),
    )


def make_job(
    config: ServerConfig,
    options: RunOptions,
    context: ContextData,
    query: str,
    forkserver: ForkServer | None = None,
    provider: Provider | None = None,
    on_event: EventSink | None = None,
    output_type: Any = None,
) -> Job:
    """A job for the registry or an endpoint: one top-level run reporting to ``sink``.

    The run talks to ``provider`` (the app's shared one), else to the config's, else it
    resolves model prefixes itself and closes what it made when it ends. Every run of an
    app forks its REPL workers from the app's one ``forkserver``. ``on_event`` sees every
    event too (the app's OpenTelemetry sink, when tracing is on). ``output_type`` is the
    run's (a ``response_format`` read by ``reply_format_shape``).
    """

    async def job(sink: EventSink) -> RLMResult:
        async with make_rlm(config, options, forkserver, provider, on_event) as rlm:
            return await rlm.acomplete(
                context, query or None, on_event=sink, output_type=output_type
            )

    return job


def make_rlm(
    config: ServerConfig,
    options: RunOptions,
    forkserver: ForkServer | None = None,
    provider: Provider | None = None,
    on_event: EventSink | None = None,
) -> RecursiveLM:
    """The :class:`RecursiveLM` behind a job or a session (see :func:`make_job`)."""
    return RecursiveLM(
        options.model,
        sub_model=options.sub_model,
        provider=provider or config.provider,
        max_iterations=options.max_iterations,
        max_depth=options.max_depth,
        max_tokens=config.max_tokens,
        limits=Limits(max_wall_time=config.max_wall_time),
        on_limit="return",
        forkserver=forkserver,
        on_event=on_event,
    )


def ignore_events(event: Event) -> None:
    """A sink for runs nobody watches (the ``/v1`` endpoint)."""

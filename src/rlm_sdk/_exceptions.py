"""The error tree of rlm_sdk.

Every error the SDK raises on purpose derives from :class:`RLMError`. Configuration
mistakes (fix your code or environment) are kept apart from failures during a run
(retry, raise a budget, or look at the partial result)::

    RLMError
    ├── ConfigurationError          bad argument, unknown model string, missing key
    ├── ProviderError               a model call failed
    │   ├── APIConnectionError      could not connect, or the connection broke
    │   │   └── APITimeoutError     no answer in time
    │   ├── APIStatusError          the server answered with an error status
    │   │   ├── BadRequestError         400, 404, 422 and other 4xx not below
    │   │   ├── AuthenticationError     401, 403
    │   │   ├── RateLimitError          429
    │   │   └── InternalServerError     5xx (and 529)
    │   └── APIResponseError        a 2xx whose body is not a usable completion
    ├── REPLError                   the REPL worker failed (not the model's code)
    │   ├── WorkerStartError        the worker did not start or did not shake hands
    │   ├── WorkerProtocolError     garbage, an oversized frame, or a broken channel
    │   └── WorkerCrashedError      the worker died and could not be brought back
    ├── IsolationError              a required sandbox layer cannot be applied
    ├── SessionClosedError          a query to a session that is closed (or idle too long)
    └── RunError                    a run ended without a final answer
        ├── LimitExceededError      a budget ran out (calls, tokens, cost, wall time)
        ├── EmptyReplyError         the model sent nothing but empty replies, several in a row
        └── OutputValidationError   the answer did not match ``output_type``, retries spent

Errors carry what a user needs to act on them: the HTTP status, the request id and an
excerpt of the body for provider errors; and any error that ended a run carries the run's
partial result (answer, usage, trajectory so far) as ``result``.

A cancelled run raises the event loop's own cancellation exception, as structured
concurrency requires; its events still end with ``RunFinished`` (``stop_reason
"cancelled"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ._types import RLMResult

__all__ = [
    "APIConnectionError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "EmptyReplyError",
    "InternalServerError",
    "IsolationError",
    "LimitExceededError",
    "OutputValidationError",
    "ProviderError",
    "REPLError",
    "RLMError",
    "RateLimitError",
    "RunError",
    "SessionClosedError",
    "WorkerCrashedError",
    "WorkerProtocolError",
    "WorkerStartError",
]


class RLMError(Exception):
    """Root of every error rlm_sdk raises on purpose.

    Attributes:
        result: when the error ended a run, what the run had done by then (partial answer,
            usage, trajectory, ``stop_reason`` ``"error"`` or ``"limit"``); ``None`` otherwise.
    """

    result: RLMResult | None = None


class ConfigurationError(RLMError):
    """The SDK was configured wrongly: fix the argument or the environment named in the message."""


class ProviderError(RLMError):
    """A call to a model provider failed.

    Attributes:
        provider: the provider's name (``openai``, ``anthropic``, ...).
        status_code: the HTTP status, when the server answered.
        request_id: the server's request id, when it sent one.
        body_excerpt: the first characters of the body, when there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
        body_excerpt: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status_code = status_code
        self.request_id = request_id
        self.body_excerpt = body_excerpt

    def __str__(self) -> str:
        parts = [self.message]
        if self.status_code is not None:
            parts.append(f"status={self.status_code}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        if self.body_excerpt:
            parts.append(f"body={self.body_excerpt!r}")
        return " | ".join(parts)


class APIConnectionError(ProviderError):
    """The provider could not be reached, or the connection broke mid-response."""


class APITimeoutError(APIConnectionError):
    """The provider did not answer within the timeout."""


class APIStatusError(ProviderError):
    """The provider answered with an error status; ``status_code`` says which."""

    status_code: int


class BadRequestError(APIStatusError):
    """A 4xx that retrying will not fix (400, 404, 422, ...)."""


class AuthenticationError(APIStatusError):
    """401 or 403: the key is missing, wrong, or lacks permission."""


class RateLimitError(APIStatusError):
    """429: too many requests, still refused after the retries."""


class InternalServerError(APIStatusError):
    """5xx: the provider failed, still failing after the retries."""


class APIResponseError(ProviderError):
    """A successful status whose body is not a usable completion (HTML, truncated JSON, no choices)."""


class REPLError(RLMError):
    """The REPL worker itself failed; errors in the model's code are cell results, not this."""


class WorkerStartError(REPLError):
    """The worker process did not start, or did not complete its handshake in time."""


class WorkerProtocolError(REPLError):
    """The channel to the worker carried garbage, an oversized frame, or broke."""


class WorkerCrashedError(REPLError):
    """The worker died and could not be restarted."""


class IsolationError(RLMError):
    """``isolation="strict"`` was asked for and a sandbox layer cannot be applied on this host."""


class SessionClosedError(RLMError):
    """A query was sent to a session that is closed: by its owner, or after its idle timeout."""


class RunError(RLMError):
    """A run ended without a final answer.

    Attributes:
        result: the result so far (partial answer, usage, trajectory), when there is one.
    """

    def __init__(self, message: str, *, result: RLMResult | None = None) -> None:
        super().__init__(message)
        self.result = result

    @property
    def partial_answer(self) -> str | None:
        """The best answer available when the run stopped, if any."""
        return None if self.result is None else self.result.answer


class LimitExceededError(RunError):
    """A budget ran out; ``limit`` names it (``model_calls``, ``tokens``, ``cost``, ``wall_time``)."""

    def __init__(
        self, message: str, *, limit: str, result: RLMResult | None = None, **details: Any
    ) -> None:
        super().__init__(message, result=result)
        self.limit = limit
        self.details = details


class EmptyReplyError(RunError):
    """The model sent empty replies (reasoning aside) several times in a row.

    Each empty reply gets a reminder; ``MAX_EMPTY_REPLIES`` in a row end the run rather than
    loop silently. ``replies`` says how many there were; ``result`` holds the partial result.
    """

    def __init__(self, message: str, *, replies: int, result: RLMResult | None = None) -> None:
        super().__init__(message, result=result)
        self.replies = replies


class OutputValidationError(RunError):
    """The answers did not match the run's ``output_type``, and no retry was left.

    Attributes:
        value: the last answer as it was read (a JSON value, or the text itself).
        errors: what was wrong with it, one problem per item (``"$.total: ..."``).
        answer: the last answer's text.
        result: the partial result (usage, trajectory); its ``answer`` is ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        value: Any = None,
        errors: list[str] | None = None,
        answer: str | None = None,
        result: RLMResult | None = None,
    ) -> None:
        super().__init__(message, result=result)
        self.value = value
        self.errors = list(errors or [])
        self.answer = answer


class SingleErrors:
    """Let one error out of a task group as itself, not wrapped in an exception group.

    Written to leave no reference cycle behind: raised while the group is handled, the error
    would take the group as its context, and the group holds the error, so both tracebacks,
    with every frame in them, would live until the cyclic collector runs. The group only
    wrapped the error, so it is dropped, and so is every local that names either.
    """

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: object, exc: BaseException | None, tb: object) -> Literal[False]:
        if not isinstance(exc, BaseExceptionGroup) or len(exc.exceptions) != 1:
            return False
        inner: BaseException | None = exc.exceptions[0]
        del exc, tb
        assert inner is not None
        try:
            raise inner
        finally:
            inner.__context__ = None
            inner = None

"""rlm_sdk: an async-first SDK for Recursive Language Models.

The context lives as ``context`` in an isolated Python REPL worker; the root model reads it
with code and calls sub-models from that code, recursively::

    from rlm_sdk import RecursiveLM

    async with RecursiveLM("openai:gpt-5-mini") as rlm:
        result = await rlm.acomplete(huge_text, "What is the magic number?")
        print(result.answer)
"""

from ._batch import BatchItem, BatchProgress, BatchResult
from ._chat import ChatCompletion
from ._events import (
    CellFinished,
    CellStarted,
    ChildRunStarted,
    Event,
    FinalAnswer,
    LimitReached,
    ModelRequest,
    ModelResponse,
    RetryScheduled,
    RunFinished,
    RunStarted,
    SubCallFinished,
    SubCallStarted,
    TurnFinished,
    TurnStarted,
    WorkerRestarted,
)
from ._exceptions import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    InternalServerError,
    IsolationError,
    LimitExceededError,
    ProviderError,
    RateLimitError,
    REPLError,
    RLMError,
    RunCancelledError,
    RunError,
    WorkerCrashedError,
    WorkerProtocolError,
    WorkerStartError,
)
from ._orchestrator import EventHandler, RecursiveLM
from ._recorder import JSONLRecorder, SavedRun, load_events, load_runs
from ._types import (
    CellRecord,
    Limits,
    ModelUsage,
    RLMResult,
    StopReason,
    SubCallRecord,
    Trajectory,
    TurnRecord,
    Usage,
)
from .providers import (
    AnthropicProvider,
    ChatMessage,
    CompletionRequest,
    CompletionResponse,
    OpenAICompatibleProvider,
    Provider,
    RateLimitedProvider,
    TokenUsage,
    register_provider,
    resolve_model,
)

__version__ = "0.1.0"

__all__ = [
    "APIConnectionError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AnthropicProvider",
    "AuthenticationError",
    "BadRequestError",
    "BatchItem",
    "BatchProgress",
    "BatchResult",
    "CellFinished",
    "CellRecord",
    "CellStarted",
    "ChatCompletion",
    "ChatMessage",
    "ChildRunStarted",
    "CompletionRequest",
    "CompletionResponse",
    "ConfigurationError",
    "Event",
    "EventHandler",
    "FinalAnswer",
    "InternalServerError",
    "IsolationError",
    "JSONLRecorder",
    "LimitExceededError",
    "LimitReached",
    "Limits",
    "ModelRequest",
    "ModelResponse",
    "ModelUsage",
    "OpenAICompatibleProvider",
    "Provider",
    "ProviderError",
    "REPLError",
    "RLMError",
    "RLMResult",
    "RateLimitError",
    "RateLimitedProvider",
    "RecursiveLM",
    "RetryScheduled",
    "RunCancelledError",
    "RunError",
    "RunFinished",
    "RunStarted",
    "SavedRun",
    "StopReason",
    "SubCallFinished",
    "SubCallRecord",
    "SubCallStarted",
    "TokenUsage",
    "Trajectory",
    "TurnFinished",
    "TurnRecord",
    "TurnStarted",
    "Usage",
    "WorkerCrashedError",
    "WorkerProtocolError",
    "WorkerRestarted",
    "WorkerStartError",
    "__version__",
    "load_events",
    "load_runs",
    "register_provider",
    "resolve_model",
]

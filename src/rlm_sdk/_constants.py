"""Every default in one place, so docs, settings and code agree on the same numbers."""

from __future__ import annotations

VERSION = "0.1.0"
"""The package version (``rlm_sdk.__version__``); pyproject.toml says the same, and a test checks."""

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_ANTHROPIC_BASE_URL = "https://api.anthropic.com/v1"
DEFAULT_OLLAMA_BASE_URL = "http://127.0.0.1:11434/v1"
ANTHROPIC_VERSION = "2023-06-01"

DEFAULT_TIMEOUT = 600.0
"""Seconds for one HTTP request to a provider (connect, read and write)."""
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_MAX_RETRIES = 2
DEFAULT_MAX_IN_FLIGHT = 64
"""Requests in flight at once through one provider instance."""
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 60.0
"""A server's Retry-After is honoured only within (0, MAX_RETRY_AFTER] seconds."""
BODY_EXCERPT_CHARS = 200

DEFAULT_MAX_ITERATIONS = 20
DEFAULT_MAX_DEPTH = 1
DEFAULT_CELL_TIMEOUT = 120.0
DEFAULT_MAX_CONCURRENT_SUBCALLS = 32
"""Sub-calls one run has in flight at once. A 32-chunk fan-out is then one wave (1.13x the
latency path, against 1.44x for two waves at 16), and one run takes at most half of a
provider's default DEFAULT_MAX_IN_FLIGHT, so two runs fanning out together still share it."""
DEFAULT_OUTPUT_LIMIT = 20_000
"""Characters of one cell's output kept for the model's history (head and tail)."""
DEFAULT_COMPACT_AT = 0.85
"""A run's history is compacted when its estimate passes this fraction of the model's window."""
MAX_EMPTY_REPLIES = 3
"""Empty replies in a row after which a run ends with ``EmptyReplyError``."""

ENTRY_POINT_GROUP = "rlm_sdk.providers"

DEFAULT_ANTHROPIC_MAX_TOKENS = 4096
"""``max_tokens`` sent to Anthropic when the request names none (the Messages API requires it)."""

DEFAULT_WORKER_START_TIMEOUT = 10.0
"""Seconds a REPL worker has to start and load its context."""
WORKER_INTERRUPT_GRACE = 1.0
"""Seconds a cell gets to stop after the SIGINT sent at its deadline, before the worker is killed."""
WORKER_EXIT_GRACE = 1.0
"""Seconds a worker that exited gets for a process that escaped its group to let go of its pipes."""
WORKER_REAP_TIMEOUT = 5.0
"""Seconds to wait for a SIGKILLed worker to be reaped before the session stops waiting for it."""
MIN_WORKER_MEMORY = 2 * 1024**3
"""Floor of a worker's default address-space limit (RLIMIT_AS), in bytes."""
DEFAULT_WORKER_FILE_SIZE_LIMIT = 1024**3
"""Largest file a worker may write (RLIMIT_FSIZE), in bytes."""
MAX_OUTPUT_LIMIT = 16 * 1024**2
"""Largest ``output_limit`` a REPL session accepts (characters per stream)."""
WORKER_ENV_ALLOWLIST = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
"""The only variables a REPL worker inherits from the parent's environment."""
FORKSERVER_REPLY_TIMEOUT = 5.0
"""Seconds a REPL session waits for the fork server to fork its worker before starting it directly."""
FORKSERVER_EXIT_GRACE = 2.0
"""Seconds the fork server gets to kill its workers and exit once closed, before it is killed."""
FORKSERVER_MAX_FAILURES = 3
"""Deaths of the fork server in a row after which it is no longer restarted (workers start directly)."""

DEMO_OPENAI_MODEL = "openai:gpt-5-mini"
"""The demo's model when only ``OPENAI_API_KEY`` is set."""
DEMO_ANTHROPIC_MODEL = "anthropic:claude-sonnet-4-5"
"""The demo's model when only ``ANTHROPIC_API_KEY`` is set."""

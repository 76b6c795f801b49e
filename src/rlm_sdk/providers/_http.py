"""The HTTP machinery every HTTP provider shares, kept in one place.

A provider module says *what* goes over the wire (a request as JSON, a JSON body back as a
reply). This module owns *how* it gets there, so that every provider behaves alike:

* the connection: every request goes through one ``httpx.AsyncClient``. One passed in is used
  as it is and never closed. Without one, the provider builds its own on first use, inside the
  event loop (and again if a later call runs in another loop, as each sync call does, since
  connections belong to one loop), on :class:`._transport.LeanTransport`; or, when the
  environment sends the provider's URL through a proxy, on httpx's transport for that proxy
  (logged once per client as ``rlm.http_proxy``). :meth:`HTTPProvider.aclose` closes only that
  client (idempotent; ``async with provider:`` works too);
* the body: JSON encoded by :func:`._json.encode_json` once a slot is free;
* a bound on requests in flight per instance, shared by every run using the instance;
* retries (tenacity, private): connection errors, timeouts, 408, 409, 429 and 5xx. A server's
  ``retry-after-ms`` or ``Retry-After`` is honoured within (0, MAX_RETRY_AFTER] seconds; otherwise
  the delay is exponential with jitter, capped. One ``rlm.retry_scheduled`` event per retry;
* errors: httpx and JSON exceptions become :mod:`rlm_sdk._exceptions` errors here and nowhere
  else, always chained with ``raise ... from err``. Response bodies are always read and released,
  so no connection leaks, whatever the outcome.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import TracebackType
from typing import Any, ClassVar, Self

import anyio
import anyio.lowlevel
import httpx
from pydantic import SecretStr
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
)

from rlm_sdk._constants import (
    BODY_EXCERPT_CHARS,
    DEFAULT_CONNECT_TIMEOUT,
    INITIAL_RETRY_DELAY,
    MAX_RETRY_AFTER,
    MAX_RETRY_DELAY,
    VERSION,
)
from rlm_sdk._exceptions import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    InternalServerError,
    RateLimitError,
)
from rlm_sdk._logging import get_logger
from rlm_sdk._observe import notify_request_sent, notify_retry

from ._json import encode_json
from ._transport import LeanTransport, environment_proxy
from ._types import CompletionRequest, CompletionResponse

__all__ = ["HTTPProvider"]

_RETRYABLE_STATUSES = frozenset({408, 409, 429})
_USER_AGENT = f"rlm-sdk/{VERSION}"


def _is_retryable(response: httpx.Response) -> bool:
    return response.status_code in _RETRYABLE_STATUSES or response.status_code >= 500


def _retry_after(headers: httpx.Headers) -> float | None:
    """The delay the server asked for, in seconds, if it is one we honour."""
    delay: float | None = None
    try:
        delay = float(headers["retry-after-ms"]) / 1000
    except (KeyError, ValueError):
        value = headers.get("retry-after")
        if value is not None:
            try:
                delay = float(value)
            except ValueError:
                date = email.utils.parsedate_tz(value)
                delay = None if date is None else email.utils.mktime_tz(date) - time.time()
    return delay if delay is not None and 0 < delay <= MAX_RETRY_AFTER else None


def _backoff(attempt: int) -> float:
    """Exponential backoff from INITIAL_RETRY_DELAY, capped at MAX_RETRY_DELAY, minus up to 25 %."""
    delay = min(INITIAL_RETRY_DELAY * 2.0 ** (attempt - 1), MAX_RETRY_DELAY)
    return delay * (1 - 0.25 * random.random())


def _wait(state: RetryCallState) -> float:
    outcome = state.outcome
    if outcome is not None and not outcome.failed:
        asked = _retry_after(outcome.result().headers)
        if asked is not None:
            return asked
    return _backoff(state.attempt_number)


def _last_outcome(state: RetryCallState) -> httpx.Response:
    """When retries run out: the last response, or the last error raised again."""
    assert state.outcome is not None
    response: httpx.Response = state.outcome.result()
    return response


def _status_error_class(status: int) -> type[APIStatusError]:
    if status in (401, 403):
        return AuthenticationError
    if status == 429:
        return RateLimitError
    if status >= 500:
        return InternalServerError
    if status >= 400:
        return BadRequestError
    return APIStatusError


def _error_detail(response: httpx.Response) -> str:
    """The server's own error message (OpenAI, Anthropic and Ollama shapes, and FastAPI's
    ``detail``, which llama.cpp's Python server and vLLM send), else the reason."""
    try:
        body = response.json()
        error = body.get("error") or body.get("detail")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        error = error["message"]
    return (
        error[:BODY_EXCERPT_CHARS] if isinstance(error, str) and error else response.reason_phrase
    )


def _excerpt(response: httpx.Response) -> str | None:
    return response.text[:BODY_EXCERPT_CHARS] or None


def _describe(err: Exception) -> str:
    if isinstance(err, json.JSONDecodeError):
        return "the body is not JSON"
    if isinstance(err, KeyError):
        return f"missing field {err}"
    if type(err) is ValueError:
        return str(err)
    return f"{type(err).__name__}: {err}"


async def _trace(event: str, info: dict[str, Any]) -> None:
    """The ``trace`` hook (httpcore's, honoured by the lean transport too): report when the
    request body is on the wire."""
    if event.endswith("send_request_body.complete"):
        notify_request_sent()


_EXTENSIONS = {"trace": _trace}


class _NoCookies(httpx.Cookies):
    """A jar that keeps nothing: a model API needs no cookies between requests."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _ProviderClient(httpx.AsyncClient):
    """The client a provider makes for itself: httpx's, keeping no cookies.

    httpx reads every response's cookies into its jar through urllib's request and response
    adapters; for a provider call that was 0.06 ms of CPU (``bench/bench_http.py``, 32 in
    flight: 0.42 -> 0.36 ms per call), and no model API asks for them back.
    """

    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        if cookies:
            raise ConfigurationError("a provider's own HTTP client keeps no cookies")


_NO_COOKIES = _NoCookies()


def _current_loop() -> object:
    return anyio.lowlevel.current_token().native_token


class HTTPProvider(ABC):
    """Base of the HTTP providers: the client, the in-flight bound, retries and errors.

    Subclasses resolve their configuration (argument > environment / .env > default), pass it
    to ``__init__``, set the class variables and implement the wire format: :meth:`_headers`,
    :meth:`_body` and :meth:`_parse`.
    """

    name: ClassVar[str]
    _path: ClassVar[str]
    """Appended to the base URL: ``/chat/completions``, ``/messages``."""
    _default_base_url: ClassVar[str]
    """The vendor's own URL, where a key is required."""
    _key_env: ClassVar[str]
    """The variable named in errors about the key."""
    _request_id_header: ClassVar[str]

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | SecretStr | None,
        timeout: float,
        max_retries: int,
        max_in_flight: int,
        http_client: httpx.AsyncClient | None,
        default_headers: Mapping[str, str] | None,
    ) -> None:
        base_url = base_url.rstrip("/")
        invalid = ConfigurationError(
            f"{self.name}: base_url must be an http(s) URL, not {base_url!r}"
        )
        try:
            scheme = httpx.URL(base_url).scheme
        except httpx.InvalidURL as err:
            raise invalid from err
        if scheme not in ("http", "https"):
            raise invalid
        if isinstance(api_key, str):
            api_key = SecretStr(api_key)
        if api_key is None or not api_key.get_secret_value():
            api_key = None
            if base_url == self._default_base_url:
                raise ConfigurationError(
                    f"{self.name}: no API key. Pass api_key= or set {self._key_env} "
                    "(in the environment or a .env file)."
                )
        if timeout <= 0 or max_retries < 0 or max_in_flight < 1:
            raise ConfigurationError(
                f"{self.name}: need timeout > 0, max_retries >= 0 and max_in_flight >= 1 "
                f"(got {timeout}, {max_retries}, {max_in_flight})"
            )
        self.base_url = base_url
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_in_flight = max_in_flight
        self._api_key = api_key
        self._default_headers = dict(default_headers or {})
        self._httpx_timeout = httpx.Timeout(timeout, connect=min(timeout, DEFAULT_CONNECT_TIMEOUT))
        self._given_client = http_client
        self._extensions = {"timeout": self._httpx_timeout.as_dict(), **_EXTENSIONS}
        self._own_headers: httpx.Headers | None = None
        self._url = httpx.URL(base_url + self._path)
        # Made on first use, inside an event loop; remade if a later call runs in another loop
        # (each sync call runs its own), since connections and limiters belong to one loop.
        self._own_client: httpx.AsyncClient | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._loop: object = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, timeout={self.timeout}, "
            f"max_retries={self.max_retries}, max_in_flight={self.max_in_flight})"
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client this provider made (never one passed in); idempotent.

        The provider stays usable: a later call makes a new client. A client made in an event
        loop that has since ended is dropped rather than closed: its sockets died with it.
        """
        client, self._own_client = self._own_client, None
        if client is not None and self._loop is _current_loop():
            await client.aclose()

    async def acomplete(self, request: CompletionRequest) -> CompletionResponse:
        """Send one request, with retries, and return the reply.

        ``latency_s`` is the wall time of the whole call: waiting for a slot, retries included.

        Raises:
            APIConnectionError: the server could not be reached, or the connection broke.
            APITimeoutError: no answer within ``timeout`` (per attempt).
            APIStatusError: an error status, after the retries for the retryable ones.
            APIResponseError: a 2xx whose body is not a usable reply.
        """
        started = time.perf_counter()
        response = await self._send(self._body(request))
        reply = self._parse_response(response, request)
        return reply.model_copy(update={"latency_s": time.perf_counter() - started})

    # --- the wire format, per provider ---------------------------------------------------

    @abstractmethod
    def _headers(self, api_key: str | None) -> dict[str, str]:
        """Protocol and authentication headers; no auth header when ``api_key`` is None."""

    @abstractmethod
    def _body(self, request: CompletionRequest) -> dict[str, Any]:
        """The JSON body for ``request``."""

    @abstractmethod
    def _parse(self, data: dict[str, Any], request: CompletionRequest) -> CompletionResponse:
        """The reply in ``data``; raise ``ValueError`` (or let a lookup fail) if it has none."""

    # --- sending ---------------------------------------------------------------------------

    def _client(self) -> tuple[httpx.AsyncClient, anyio.CapacityLimiter]:
        """The client to send through and the bound on requests in flight, for this loop."""
        loop = _current_loop()
        if self._limiter is None or self._loop is not loop:
            self._limiter = anyio.CapacityLimiter(self.max_in_flight)
            self._own_client = None
            self._loop = loop
        if self._given_client is not None:
            return self._given_client, self._limiter
        if self._own_client is None:
            self._own_client = self._make_client()
        return self._own_client, self._limiter

    def _make_client(self) -> httpx.AsyncClient:
        """The provider's own client: on the lean transport, or on httpx's through the proxy
        that the environment names for the provider's URL (said once, in the log)."""
        proxy = environment_proxy(self._url)
        if proxy is None:
            return _ProviderClient(transport=LeanTransport(max_idle=self.max_in_flight))
        shown = str(httpx.URL(proxy).copy_with(userinfo=b""))  # never the credentials
        get_logger(provider=self.name).info("rlm.http_proxy", proxy=shown)
        limits = httpx.Limits(
            max_connections=self.max_in_flight, max_keepalive_connections=self.max_in_flight
        )
        return _ProviderClient(transport=httpx.AsyncHTTPTransport(proxy=proxy, limits=limits))

    async def _send(self, body: dict[str, Any]) -> httpx.Response:
        """POST ``body``, retrying what may succeed later; return a 2xx response or raise."""
        # The first attempt runs outside tenacity, whose bookkeeping costs about as much CPU
        # as the request itself; only an outcome worth retrying enters the retry loop, where
        # it is replayed as attempt 1, so delays, logs and events are exactly tenacity's.
        first: httpx.Response | APIConnectionError
        try:
            first = await self._attempt(body)
        except APIConnectionError as err:
            first = err
        else:
            if not _is_retryable(first):
                if not first.is_success:
                    raise self._status_error(first)
                return first
        replay: list[httpx.Response | APIConnectionError] = [first]

        async def attempt() -> httpx.Response:
            if replay:
                outcome = replay.pop()
                if isinstance(outcome, APIConnectionError):
                    raise outcome
                return outcome
            return await self._attempt(body)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1),
            retry=retry_if_exception_type(APIConnectionError) | retry_if_result(_is_retryable),
            wait=_wait,
            before_sleep=self._log_retry,
            sleep=anyio.sleep,
            retry_error_callback=_last_outcome,
        )
        response: httpx.Response = await retrying(attempt)
        if not response.is_success:
            raise self._status_error(response)
        return response

    def _request_headers(self) -> dict[str, str]:
        """The headers of every request: protocol, authentication, the caller's defaults."""
        secret = None if self._api_key is None else self._api_key.get_secret_value()
        return {
            "accept": "application/json",
            "content-type": "application/json",
            "user-agent": _USER_AGENT,
            **self._headers(secret),
            **self._default_headers,
        }

    async def _attempt(self, body: dict[str, Any]) -> httpx.Response:
        """One POST, its response read in full (the connection goes back to the pool).

        A caller's client builds the request, so that its own defaults (headers, cookies,
        query parameters) apply. The provider's own client has none, and the request is made
        directly: ``build_request`` merging nothing into nothing cost 0.06 ms of CPU per call
        (``bench/bench_http.py``: 0.52 -> 0.40 ms per call, with the headers built once).
        """
        client, in_flight = self._client()
        content = encode_json(body)
        if client is self._given_client:
            request = client.build_request(
                "POST",
                self._url,
                content=content,
                headers=self._request_headers(),
                timeout=self._httpx_timeout,
                extensions=_EXTENSIONS,
            )
        else:
            if self._own_headers is None:  # the client's defaults and ours, normalised once
                self._own_headers = client.headers.copy()
                self._own_headers.update(self._request_headers())
            request = httpx.Request(
                "POST",
                self._url,
                content=content,
                headers=self._own_headers,
                extensions=self._extensions,
            )
        try:
            async with in_flight:
                return await client.send(request)
        except httpx.TimeoutException as err:
            raise APITimeoutError(
                f"{self.name} did not answer within {self.timeout} s ({type(err).__name__})",
                provider=self.name,
            ) from err
        except httpx.RequestError as err:
            raise APIConnectionError(
                f"could not reach {self.name} at {self.base_url}, or the connection broke "
                f"({type(err).__name__}: {err})",
                provider=self.name,
            ) from err

    def _log_retry(self, state: RetryCallState) -> None:
        """Report a scheduled retry, before its sleep."""
        assert state.outcome is not None
        assert state.next_action is not None
        status = request_id = None
        if state.outcome.failed:
            error = state.outcome.exception()
            reason = "timeout" if isinstance(error, APITimeoutError) else "connection_error"
        else:
            response: httpx.Response = state.outcome.result()
            reason, status, request_id = "status", response.status_code, self._request_id(response)
        get_logger(provider=self.name).info(
            "rlm.retry_scheduled",
            attempt=state.attempt_number,
            max_retries=self.max_retries,
            delay=round(state.next_action.sleep, 3),
            reason=reason,
            status_code=status,
            request_id=request_id,
        )
        notify_retry(
            self.name,
            state.attempt_number,
            state.next_action.sleep,
            reason if status is None else f"{reason} {status}",
        )

    # --- reading the answer -------------------------------------------------------------

    def _request_id(self, response: httpx.Response) -> str | None:
        request_id: str | None = response.headers.get(self._request_id_header)
        return request_id

    def _status_error(self, response: httpx.Response) -> APIStatusError:
        status = response.status_code
        error_class = _status_error_class(status)
        message = f"{self.name} answered {status}: {_error_detail(response)}"
        if error_class is AuthenticationError:
            message += f" (check the key: pass api_key= or set {self._key_env})"
        elif status in (404, 405):  # a wrong base URL (often without /v1), or an unknown model
            message += f" (POST {self._url}: check base_url and the model name)"
        return error_class(
            message,
            provider=self.name,
            status_code=status,
            request_id=self._request_id(response),
            body_excerpt=_excerpt(response),
        )

    def _parse_response(
        self, response: httpx.Response, request: CompletionRequest
    ) -> CompletionResponse:
        try:
            data = response.json()
            if not isinstance(data, dict):
                raise ValueError(f"the body is a JSON {type(data).__name__}, not an object")
            reply = self._parse(data, request)
        except (ValueError, LookupError, TypeError, AttributeError) as err:
            raise APIResponseError(
                f"{self.name} sent an unusable reply: {_describe(err)}",
                provider=self.name,
                status_code=response.status_code,
                request_id=self._request_id(response),
                body_excerpt=_excerpt(response),
            ) from err
        return reply.model_copy(
            update={"request_id": self._request_id(response) or reply.request_id}
        )

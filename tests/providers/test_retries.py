"""Retries and error translation, shared by every HTTP provider (backoff is instant: see conftest)."""

from __future__ import annotations

import email.utils
import re
import time

import httpx
import pytest
import respx

from rlm_sdk._constants import INITIAL_RETRY_DELAY, MAX_RETRY_DELAY
from rlm_sdk._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    RateLimitError,
)
from rlm_sdk.providers import OpenAICompatibleProvider
from rlm_sdk.providers._http import _backoff
from tests.providers.helpers import LOCAL_URL, captured_logs, chat

OK_BODY = {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}
KEY = "sk-never-logged"


def provider(**kwargs: object) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(base_url=LOCAL_URL, api_key=KEY, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (408, BadRequestError),
        (409, BadRequestError),
        (429, RateLimitError),
        (500, InternalServerError),
        (502, InternalServerError),
        (503, InternalServerError),
        (529, InternalServerError),
    ],
)
async def test_retryable_status_retried_then_raised(
    local_api: respx.MockRouter,
    sleeps: list[float],
    status: int,
    error_class: type[APIStatusError],
) -> None:
    """408, 409, 429 and 5xx are tried 1 + max_retries times, with one log per retry, then raised."""
    route = local_api.post("/chat/completions").respond(
        status, json={"error": {"message": "busy"}}, headers={"x-request-id": "req-1"}
    )
    with captured_logs() as logs:
        async with provider(max_retries=2) as p:
            with pytest.raises(error_class) as caught:
                await p.acomplete(chat())
    assert route.call_count == 3
    assert len(sleeps) == 2
    assert [log["event"] for log in logs] == ["rlm.retry_scheduled"] * 2
    assert logs[0] == {
        "event": "rlm.retry_scheduled",
        "log_level": "info",
        "provider": "openai",
        "attempt": 1,
        "max_retries": 2,
        "delay": round(sleeps[0], 3),
        "reason": "status",
        "status_code": status,
        "request_id": "req-1",
    }
    error = caught.value
    assert (error.status_code, error.request_id, error.provider) == (status, "req-1", "openai")
    assert error.message == f"openai answered {status}: busy"
    assert KEY not in str(logs) + str(error)


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, BadRequestError),
        (422, BadRequestError),
        (302, APIStatusError),
    ],
)
async def test_other_status_not_retried(
    local_api: respx.MockRouter,
    sleeps: list[float],
    status: int,
    error_class: type[APIStatusError],
) -> None:
    """Other error statuses raise their class at once, without a retry."""
    route = local_api.post("/chat/completions").respond(status, text="nope")
    with captured_logs() as logs:
        async with provider() as p:
            with pytest.raises(error_class) as caught:
                await p.acomplete(chat())
    assert type(caught.value) is error_class
    assert (route.call_count, sleeps, logs) == (1, [], [])
    assert caught.value.body_excerpt == "nope"


async def test_authentication_error_names_the_variable(local_api: respx.MockRouter) -> None:
    """A 401 says which variable holds the key, and never shows the key."""
    local_api.post("/chat/completions").respond(
        401, json={"error": {"message": "Incorrect API key"}}
    )
    async with provider() as p:
        with pytest.raises(AuthenticationError) as caught:
            await p.acomplete(chat())
    assert str(caught.value) == (
        "openai answered 401: Incorrect API key (check the key: pass api_key= or set "
        'OPENAI_API_KEY) | status=401 | body=\'{"error":{"message":"Incorrect API key"}}\''
    )


async def test_recovers_after_a_retry(local_api: respx.MockRouter, sleeps: list[float]) -> None:
    """A 503 then a 200 gives the reply, after one retry."""
    route = local_api.post("/chat/completions")
    route.side_effect = [httpx.Response(503), httpx.Response(200, json=OK_BODY)]
    async with provider() as p:
        reply = await p.acomplete(chat())
    assert (reply.text, route.call_count, len(sleeps)) == ("ok", 2, 1)


@pytest.mark.parametrize(
    ("raised", "error_class", "reason"),
    [
        (httpx.ConnectError("refused"), APIConnectionError, "connection_error"),
        (httpx.RemoteProtocolError("peer closed"), APIConnectionError, "connection_error"),
        (httpx.ReadError("reset"), APIConnectionError, "connection_error"),
        (httpx.ReadTimeout("slow"), APITimeoutError, "timeout"),
        (httpx.ConnectTimeout("slow"), APITimeoutError, "timeout"),
        (httpx.PoolTimeout("full"), APITimeoutError, "timeout"),
    ],
)
async def test_transport_errors_retried_then_translated(
    local_api: respx.MockRouter,
    sleeps: list[float],
    raised: httpx.RequestError,
    error_class: type[APIConnectionError],
    reason: str,
) -> None:
    """Connection errors and timeouts are retried, then raised as typed errors chained to httpx's."""
    route = local_api.post("/chat/completions").mock(side_effect=raised)
    with captured_logs() as logs:
        async with provider() as p:
            with pytest.raises(error_class) as caught:
                await p.acomplete(chat())
    assert type(caught.value) is error_class
    assert caught.value.__cause__ is raised
    assert caught.value.provider == "openai"
    assert route.call_count == 3
    assert [(log["reason"], log["status_code"]) for log in logs] == [(reason, None)] * 2


async def test_max_retries_zero(local_api: respx.MockRouter, sleeps: list[float]) -> None:
    """max_retries=0 means one attempt."""
    route = local_api.post("/chat/completions").respond(500)
    async with provider(max_retries=0) as p:
        with pytest.raises(InternalServerError):
            await p.acomplete(chat())
    assert (route.call_count, sleeps) == (1, [])


def _http_date(value: str) -> str:
    """``"<in 5 s>"`` as an HTTP date 5 s from now (made when the test runs, not when collected)."""
    if match := re.fullmatch(r"<in (-?\d+) s>", value):
        return email.utils.formatdate(time.time() + int(match[1]), usegmt=True)
    return value


@pytest.mark.parametrize(
    ("headers", "low", "high"),
    [
        pytest.param({"retry-after-ms": "1500"}, 1.5, 1.5, id="retry-after-ms"),
        pytest.param({"retry-after-ms": "250", "retry-after": "9"}, 0.25, 0.25, id="ms-wins"),
        pytest.param({"retry-after": "2"}, 2.0, 2.0, id="seconds"),
        pytest.param({"retry-after": "60"}, 60.0, 60.0, id="at-the-cap"),
        pytest.param({"retry-after-ms": "x", "retry-after": "3"}, 3.0, 3.0, id="bad-ms"),
        pytest.param({"retry-after": "<in 5 s>"}, 3.0, 5.0, id="http-date"),
        pytest.param(
            {"retry-after": "0"}, 0.75 * INITIAL_RETRY_DELAY, INITIAL_RETRY_DELAY, id="zero"
        ),
        pytest.param(
            {"retry-after": "61"}, 0.75 * INITIAL_RETRY_DELAY, INITIAL_RETRY_DELAY, id="too-long"
        ),
        pytest.param(
            {"retry-after": "soon"}, 0.75 * INITIAL_RETRY_DELAY, INITIAL_RETRY_DELAY, id="garbage"
        ),
        pytest.param(
            {"retry-after": "<in -30 s>"},
            0.75 * INITIAL_RETRY_DELAY,
            INITIAL_RETRY_DELAY,
            id="past-date",
        ),
        pytest.param({}, 0.75 * INITIAL_RETRY_DELAY, INITIAL_RETRY_DELAY, id="none"),
    ],
)
async def test_retry_after(
    local_api: respx.MockRouter,
    sleeps: list[float],
    headers: dict[str, str],
    low: float,
    high: float,
) -> None:
    """retry-after-ms, then Retry-After (seconds or date) within (0, 60] s; else the backoff."""
    route = local_api.post("/chat/completions")
    headers = {name: _http_date(value) for name, value in headers.items()}
    route.side_effect = [httpx.Response(429, headers=headers), httpx.Response(200, json=OK_BODY)]
    async with provider() as p:
        await p.acomplete(chat())
    assert len(sleeps) == 1
    assert low <= sleeps[0] <= high


@pytest.mark.parametrize("attempt", range(1, 10))
def test_backoff_is_exponential_jittered_and_capped(attempt: int) -> None:
    """The backoff doubles from INITIAL_RETRY_DELAY, loses up to 25 % to jitter, and is capped."""
    nominal = min(INITIAL_RETRY_DELAY * 2 ** (attempt - 1), MAX_RETRY_DELAY)
    delays = {_backoff(attempt) for _ in range(50)}
    assert all(0.75 * nominal <= delay <= nominal for delay in delays)
    assert len(delays) > 1


async def test_retry_logged_before_its_sleep(
    local_api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each retry's log event is emitted before the provider sleeps."""
    from rlm_sdk.providers import _http

    seen_at_sleep: list[int] = []
    local_api.post("/chat/completions").respond(503)
    with captured_logs() as logs:

        async def sleep(seconds: float) -> None:
            seen_at_sleep.append(len(logs))

        monkeypatch.setattr(_http, "_sleep", sleep)
        async with provider() as p:
            with pytest.raises(InternalServerError):
                await p.acomplete(chat())
    assert seen_at_sleep == [1, 2]

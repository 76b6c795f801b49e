"""rlm_sdk._frontend: the front ends' internal API, and rich as an optional extra."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rlm_sdk import ConfigurationError, RecursiveLM
from rlm_sdk._frontend import console_view
from rlm_sdk.cli import main
from rlm_sdk.testing import ScriptedProvider


@pytest.fixture
def no_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import rich`` fail, as on an install without the ``cli`` extra."""
    for name in list(sys.modules):
        if name == "rich" or name.startswith("rich.") or name == "rlm_sdk._console":
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "rich", None)


@pytest.mark.usefixtures("no_rich")
def test_console_view_without_rich_names_the_extra() -> None:
    """Without rich, the console view is a ConfigurationError that says what to install."""
    with pytest.raises(ConfigurationError, match=r"rlm-sdk\[cli\]"):
        console_view()


@pytest.mark.usefixtures("no_rich")
async def test_verbose_run_without_rich_fails_before_it_starts() -> None:
    """verbose=True without rich fails at once with the install command, calling no model."""
    provider = ScriptedProvider(["FINAL(x)"])
    rlm = RecursiveLM("m", provider=provider, verbose=True)
    with pytest.raises(ConfigurationError, match=r"rlm-sdk\[cli\]"):
        await rlm.acomplete("ctx", "q")
    assert provider.requests == []


@pytest.mark.usefixtures("no_rich")
def test_cli_view_without_rich_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rlm-sdk view` without rich prints one line naming the extra, not a traceback."""
    path = tmp_path / "run.jsonl"
    path.write_text('{"schema": "rlm_sdk.trajectory", "version": 1}\n')
    assert main(["view", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "rlm-sdk[cli]" in err


def test_console_view_renders_with_rich() -> None:
    """With rich installed, console_view gives a working view (the extra is in the dev set-up)."""
    view = console_view(width=80, threaded=False)
    assert type(view).__name__ == "ConsoleView"


@pytest.fixture
def no_tracer_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process as if no OpenTelemetry SDK had been configured (restored afterwards)."""
    from opentelemetry import trace
    from opentelemetry.util._once import Once

    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", Once())


@pytest.mark.usefixtures("no_tracer_provider")
def test_configure_tracing_installs_an_otlp_sdk_only_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve --otel` installs an SDK exporting OTLP where OTEL_* says, and leaves an existing one alone."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from rlm_sdk._frontend import configure_tracing

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9/")
    assert configure_tracing() == "OTLP over HTTP to http://127.0.0.1:9/v1/traces"
    provider = trace.get_tracer_provider()
    try:
        assert isinstance(provider, TracerProvider)
        assert provider.resource.attributes["service.name"] == "rlm-sdk"
        assert configure_tracing() == "through the tracer provider already configured"
        assert trace.get_tracer_provider() is provider
    finally:
        provider.shutdown()  # type: ignore[attr-defined]


@pytest.mark.usefixtures("no_tracer_provider")
def test_configure_tracing_without_the_sdk_names_the_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without OpenTelemetry's SDK, `serve --otel` fails with the packages to install."""
    from rlm_sdk._frontend import configure_tracing

    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(ConfigurationError, match=r"rlm-sdk\[otel\]' opentelemetry-sdk"):
        configure_tracing()

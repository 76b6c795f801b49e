"""The live console view (``verbose=True``): colourful panels for each step of a run.

This is a front end, the one library module that imports ``rich``, and only when asked for.
It reads the same events as every other view. Rendering happens on a background thread fed
by a queue, so a run with hundreds of sub-calls is never held up by the terminal; the run's
final event waits for the queue to drain, so output is complete when ``acomplete`` returns.
"""

from __future__ import annotations

import queue
import threading
from typing import IO

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from ._events import (
    CellFinished,
    CellStarted,
    ChildRunStarted,
    ConfirmationAsked,
    Event,
    FinalAnswer,
    HistoryCompacted,
    LimitReached,
    ModelResponse,
    OutputRejected,
    ProtocolSwitched,
    ReplyParsed,
    RetryScheduled,
    RunFinished,
    RunStarted,
    SubCallFinished,
    SubCallStarted,
    TurnStarted,
    WorkerRestarted,
)
from ._protocol import split_reasoning, truncate_middle
from ._types import Usage

__all__ = ["ConsoleView", "render_usage"]

_SHOWN = 1_500  # characters of a reply or an output shown before cutting to head and tail
_PREVIEW = 120


def _preview(text: str) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= _PREVIEW else one_line[: _PREVIEW - 3] + "..."


def render_usage(usage: Usage, wall_time_s: float | None = None) -> Table:
    """A table of calls, tokens and cost per model."""
    title = "Usage" if wall_time_s is None else f"Usage ({wall_time_s:.2f} s)"
    table = Table(title=title, title_justify="left", header_style="bold")
    for col in ("model", "calls", "prompt tok", "completion tok", "cost"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, m in usage.models.items():
        cost = "-" if m.cost is None else f"${m.cost:.4f}"
        table.add_row(name, str(m.calls), f"{m.prompt_tokens:,}", f"{m.completion_tokens:,}", cost)
    if len(usage.models) > 1:
        cost = "-" if usage.cost is None else f"${usage.cost:.4f}"
        table.add_row(
            "[b]total[/b]",
            str(usage.calls),
            f"{usage.prompt_tokens:,}",
            f"{usage.completion_tokens:,}",
            cost,
        )
    return table


class ConsoleView:
    """Renders events to a terminal (or any file) as they arrive.

    Args:
        file: where to write; standard error by default, so ``--json`` output stays clean.
        width: fixed width (tests use it to render to a string).
        threaded: render on a background thread (default); ``False`` renders inline.
    """

    def __init__(
        self, file: IO[str] | None = None, *, width: int | None = None, threaded: bool = True
    ) -> None:
        self.console = Console(file=file, width=width, stderr=file is None, highlight=False)
        self._queue: queue.SimpleQueue[Event | None] | None = None
        self._thread: threading.Thread | None = None
        self._threaded = threaded

    def handle(self, event: Event) -> None:
        """The event sink: enqueue (or render) one event."""
        if not self._threaded:
            self.render(event)
            return
        if self._thread is None:
            self._queue = queue.SimpleQueue()
            self._thread = threading.Thread(target=self._drain, name="rlm-console", daemon=True)
            self._thread.start()
        assert self._queue is not None
        self._queue.put(event)
        if isinstance(event, RunFinished) and event.depth == 0:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _drain(self) -> None:
        assert self._queue is not None
        while (event := self._queue.get()) is not None:
            try:
                self.render(event)
            except Exception as err:  # a broken terminal must never break a run
                self.console.print(f"[red]console view error: {escape(str(err))}[/red]")

    def render(self, event: Event) -> None:
        """Write one event."""
        c = self.console
        pad = "  " * event.depth
        if isinstance(event, RunStarted):
            who = "Run" if event.depth == 0 else f"Child run (depth {event.depth})"
            c.rule(f"[bold cyan]{who} {event.run_id}[/] · {escape(event.model)}", style="cyan")
            c.print(f"{pad}[dim]context:[/] {escape(event.context_description)}")
            if event.query:
                c.print(f"{pad}[dim]query:[/] [bold]{escape(event.query)}[/]")
        elif isinstance(event, TurnStarted):
            c.print(f"{pad}[bold blue]── turn {event.iteration}[/]")
        elif isinstance(event, ModelResponse) and event.purpose != "sub_call":
            if event.reasoning:  # collapsed: its size and its first words
                c.print(
                    f"{pad}[dim]▸ reasoning ({len(event.reasoning):,} chars): "
                    f"{escape(_preview(event.reasoning))}[/]"
                )
            shown = split_reasoning(event.text)[0] if event.reasoning else event.text
            for call in event.tool_calls:
                shown += f"\n→ {call.name}({_preview(call.arguments)})"
            c.print(
                Panel(
                    Text(truncate_middle(shown.strip("\n"), _SHOWN) or "(empty reply)"),
                    title=f"[green]{escape(event.model)}[/] reply",
                    subtitle=f"{event.latency_s:.2f} s · {event.prompt_tokens:,}+{event.completion_tokens:,} tok",
                    border_style="green",
                    padding=(0, 1),
                )
            )
        elif isinstance(event, ReplyParsed):
            if event.fence not in (None, "repl") or event.notes:
                read = f"code from {event.fence}" if event.fence else "no code"
                notes = "; ".join(n for n in event.notes if n != "reasoning set aside")
                c.print(
                    f"{pad}[dim]read: {escape(read)}{' · ' + escape(notes) if notes else ''}[/]"
                )
            for problem in event.problems:
                c.print(f"{pad}[yellow]⚠ {escape(problem)}[/]")
        elif isinstance(event, ProtocolSwitched):
            c.print(
                f"{pad}[yellow]the server refused tools: going on with fenced text "
                f"({escape(_preview(event.reason))})[/]"
            )
        elif isinstance(event, ConfirmationAsked):
            c.print(
                f"{pad}[yellow]answer not taken yet, written before the output: "
                f"{escape(_preview(event.answer))} (the model is asked to confirm it)[/]"
            )
        elif isinstance(event, OutputRejected):
            c.print(
                f"{pad}[yellow]answer rejected by output_type (retries left: {event.retries_left}): "
                f"{escape(_preview('; '.join(event.errors)))}[/]"
            )
        elif isinstance(event, HistoryCompacted):
            what = f"turns 1-{event.turns} summarised" if event.summary else "messages cut"
            c.print(
                f"{pad}[magenta]history compacted ({what}): {event.tokens_before:,} → "
                f"{event.tokens_after:,} tokens of a {event.window:,}-token window"
                + (f"; in full in the REPL as `{event.variable}`" if event.variable else "")
                + "[/]"
            )
        elif isinstance(event, CellStarted):
            c.print(
                Panel(
                    Syntax(
                        truncate_middle(event.code, _SHOWN),
                        "python",
                        theme="monokai",
                        word_wrap=True,
                    ),
                    title=f"[yellow]repl cell {event.cell + 1}[/]",
                    border_style="yellow",
                    padding=(0, 1),
                )
            )
        elif isinstance(event, CellFinished):
            body = truncate_middle(event.stdout, _SHOWN) if event.stdout else ""
            if event.stderr:
                body += ("\n" if body else "") + truncate_middle(event.stderr, _SHOWN // 2)
            if event.error:
                body += ("\n" if body else "") + truncate_middle(event.error, _SHOWN // 2)
            style = "red" if event.error else "magenta"
            c.print(
                Panel(
                    Text(body or "(no output)"),
                    title=f"[{style}]output[/] · {event.duration_s * 1000:.0f} ms",
                    border_style=style,
                    padding=(0, 1),
                )
            )
        elif isinstance(event, SubCallStarted):
            c.print(
                f"{pad}  [cyan]↳ {event.kind}_query[/] → {escape(event.model)}: [dim]{escape(_preview(event.prompt))}[/]"
            )
        elif isinstance(event, SubCallFinished):
            mark = "[red]✗[/]" if event.error else "[green]✓[/]"
            how = "cached" if event.cached else f"{event.duration_s:.2f} s"
            c.print(
                f"{pad}  {mark} [dim]{how}[/] {escape(_preview(event.error or event.response))}"
            )
        elif isinstance(event, ChildRunStarted):
            c.print(f"{pad}  [cyan]↳ child run {event.child_run_id}[/]")
        elif isinstance(event, RetryScheduled):
            c.print(
                f"{pad}[yellow]retry {event.attempt} in {event.delay_s:.1f} s: {escape(event.reason)}[/]"
            )
        elif isinstance(event, WorkerRestarted):
            c.print(f"{pad}[red]REPL restarted: {escape(event.reason)}[/]")
        elif isinstance(event, LimitReached):
            c.print(f"{pad}[bold red]limit reached ({event.limit}): {escape(event.detail)}[/]")
        elif isinstance(event, FinalAnswer):
            if event.depth == 0:
                c.print(
                    Panel(Text(event.answer), title="[bold]final answer", border_style="bold green")
                )
            else:
                c.print(f"{pad}[green]child answer:[/] {escape(_preview(event.answer))}")
        elif isinstance(event, RunFinished) and event.depth == 0:
            c.print(render_usage(event.result.usage, event.result.wall_time_s))

    def __repr__(self) -> str:
        return f"ConsoleView(file={self.console.file!r})"

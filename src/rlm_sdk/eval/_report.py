"""The HTML report: one self-contained page a person can open offline and read at a glance.

Charts are plotly figures (the ``rlm-sdk[eval]`` extra), imported only here and only when a
report is written, so importing the SDK never loads a plotting library. The first figure
embeds plotly's JavaScript in the page and the others reuse it: the page fetches nothing
when it is opened. Tables are plain HTML built from the summary (the same numbers CI reads
in ``summary.json``).

What the page shows, top to bottom: the headline table (score with its 95 % interval and
mean cost, per family and method, and paired win/tie/loss counts), accuracy against length
per family with bands and a grey "does not fit" band where the direct call overflowed,
cost per query (quantiles and spread), calls and latency per query, an accuracy-cost
scatter (when costs are known), the failures by status with a table of where they happened
and their first error, and every sample with a link to its trajectory.
"""

from __future__ import annotations

import html
import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._rows import EvalRow

__all__ = ["INSTALL_HINT", "plotly_missing", "write_report"]

INSTALL_HINT = "the eval report needs plotly, which is not installed: pip install 'rlm-sdk[eval]'"
_PALETTE = ("#4361ee", "#e76f51", "#2a9d8f", "#9b5de5", "#f4a261", "#264653", "#e63946", "#8d99ae")
_STATUS_COLOURS = {
    "answered": "#2a9d8f",
    "overflow": "#8d99ae",
    "no_answer": "#f4a261",
    "limit": "#e9c46a",
    "provider_error": "#e63946",
    "error": "#9d0208",
    "cost_cap": "#6c757d",
}
_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2130;background:#f7f8fb}
main{max-width:1180px;margin:0 auto;padding:28px 24px 60px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:34px 0 8px;border-bottom:1px solid #dde1ea;padding-bottom:4px}
.sub{color:#5c6378;margin:0 0 18px}.note{color:#5c6378;font-size:13px}
table{border-collapse:collapse;background:#fff;font-size:13.5px;margin:8px 0;width:100%}
th,td{border:1px solid #e3e6ee;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#eef0f6;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.win{color:#1b7f5b;font-weight:600}.loss{color:#b3261e;font-weight:600}
.card{background:#fff;border:1px solid #e3e6ee;border-radius:8px;padding:8px;margin:10px 0}
code{background:#eef0f6;padding:1px 4px;border-radius:3px}
details{margin:6px 0}summary{cursor:pointer;font-weight:600}
.s-answered{color:#1b7f5b}.s-overflow{color:#5c6378}.s-error,.s-provider_error{color:#b3261e}
.ans{max-width:260px;overflow-wrap:anywhere}
"""

_OPEN_TARGET = """
function openTarget() {
  const row = document.getElementById(decodeURIComponent(location.hash.slice(1)));
  if (!row) return;
  const box = row.closest("details");
  if (box) box.open = true;
  row.scrollIntoView({ block: "center" });
}
addEventListener("hashchange", openTarget);
openTarget();
"""
"""A sample's anchor (from the failures table) opens its family's list first."""


def plotly_missing() -> str | None:
    """Why a report cannot be written here (plotly is missing), or ``None``."""
    return None if importlib.util.find_spec("plotly") is not None else INSTALL_HINT


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _p_value(value: float | None) -> str:
    if value is None:
        return "–"
    return "&lt; 0.001" if value < 0.001 else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _money(value: float | None) -> str:
    if value is None:
        return "–"
    return f"${value:.4f}" if value < 1 else f"${value:.2f}"


def _colour(methods: Sequence[str], method: str) -> str:
    return _PALETTE[methods.index(method) % len(_PALETTE)]


def _fill(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _bars(cells: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Error bars from the cells' 95 % intervals."""
    return {
        "type": "data",
        "symmetric": False,
        "array": [c["ci_high"] - c["mean"] for c in cells],
        "arrayminus": [c["mean"] - c["ci_low"] for c in cells],
        "thickness": 1.5,
        "width": 6,
    }


def _accuracy_figure(summary: dict[str, Any]) -> Any:
    import plotly.graph_objects as go  # type: ignore[import-untyped]
    from plotly.subplots import make_subplots  # type: ignore[import-untyped]

    families: list[str] = summary["families"]
    methods: list[str] = summary["methods"]
    lengths: list[int] = summary["lengths"]
    labels = {c["length"]: c["length_label"] for c in summary["cells"]}
    cols = min(3, max(1, len(families)))
    rows = math.ceil(len(families) / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=families,
        horizontal_spacing=0.07,
        vertical_spacing=0.16,
    )
    for k, family in enumerate(families):
        row, col = k // cols + 1, k % cols + 1
        for method in methods:
            cells = [
                c
                for c in summary["cells"]
                if c["family"] == family and c["method"] == method and c["n"]
            ]
            if not cells:
                continue
            xs: list[float] = [lengths.index(c["length"]) for c in cells]
            if len(cells) == 1:  # side by side, so one method's bar does not hide another's
                xs = [xs[0] + 0.08 * (methods.index(method) - (len(methods) - 1) / 2)]
            colour = _colour(methods, method)
            fig.add_trace(
                go.Scatter(
                    x=xs + xs[::-1],
                    y=[c["ci_high"] for c in cells] + [c["ci_low"] for c in cells][::-1],
                    mode="lines",
                    fill="toself",
                    fillcolor=_fill(colour, 0.15),
                    line={"width": 0, "color": colour},
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=method,
                ),
                row=row,
                col=col,
            )
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=[c["mean"] for c in cells],
                    mode="lines+markers",
                    name=method,
                    line={"color": colour, "width": 2.5},
                    error_y=_bars(cells) if len(cells) == 1 else None,  # a band needs two points
                    legendgroup=method,
                    showlegend=k == 0,
                    customdata=[
                        [c["n"], c["ci_low"], c["ci_high"], labels[c["length"]]] for c in cells
                    ],
                    hovertemplate=f"{method} @ %{{customdata[3]}}: %{{y:.2f}} "
                    "[%{customdata[1]:.2f}, %{customdata[2]:.2f}], n=%{customdata[0]}<extra></extra>",
                ),
                row=row,
                col=col,
            )
            if method.startswith("direct"):
                for c in cells:
                    if c["overflow_rate"] >= 0.5:
                        x = lengths.index(c["length"])
                        fig.add_vrect(
                            x0=x - 0.45, x1=x + 0.45, fillcolor="#8d99ae", opacity=0.22, line_width=0,
                            annotation_text="does not fit", annotation_position="top left",
                            annotation_font_size=10, row=row, col=col,
                        )  # fmt: skip
        axis = "" if k == 0 else str(k + 1)
        fig.layout[f"xaxis{axis}"].update(
            tickvals=list(range(len(lengths))),
            ticktext=[labels.get(n, str(n)) for n in lengths],
            range=[-0.5, len(lengths) - 0.5],
        )
        fig.layout[f"yaxis{axis}"].update(
            range=[-0.03, 1.12], tickvals=[0, 0.2, 0.4, 0.6, 0.8, 1.0], tickformat=".0%"
        )
    height = 330 * rows + 60
    top = 90  # the legend sits above the first row's titles, in this margin
    fig.update_layout(
        height=height, margin={"l": 40, "r": 20, "t": top, "b": 40}, template="plotly_white",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1 + 36 / (height - top - 40),
                "x": 0, "xanchor": "left"},
    )  # fmt: skip
    return fig


def _costs_known(rows: Sequence[EvalRow]) -> bool:
    return any(r.cost is not None for r in rows)


def _spread_figure(rows: Sequence[EvalRow], methods: list[str]) -> Any:
    """Box plots per method: cost (when any is known), model calls and latency per query."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    with_cost = _costs_known(rows)
    titles = ["model calls per query", "latency per query (s)"]
    if with_cost:
        titles.insert(0, "cost per query (USD)")
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles)
    for method in methods:
        mine = [r for r in rows if r.method == method and r.status != "cost_cap"]
        colour = _colour(methods, method)
        series: list[list[float]] = [
            [float(r.calls) for r in mine],
            [r.latency_s for r in mine],
        ]
        if with_cost:
            series.insert(0, [r.cost for r in mine if r.cost is not None])
        for col, values in enumerate(series, start=1):
            fig.add_trace(
                go.Box(
                    y=values,
                    name=method,
                    marker_color=colour,
                    boxpoints="outliers",
                    showlegend=False,
                ),
                row=1,
                col=col,
            )
    fig.update_layout(
        height=360, margin={"l": 40, "r": 20, "t": 40, "b": 40}, template="plotly_white"
    )
    return fig


def _scatter_figure(summary: dict[str, Any]) -> Any:
    import plotly.graph_objects as go

    methods: list[str] = summary["methods"]
    fig = go.Figure()
    for method in methods:
        cells = [
            c for c in summary["cells"] if c["method"] == method and c["cost_mean"] is not None
        ]
        fig.add_trace(
            go.Scatter(
                x=[c["cost_mean"] for c in cells],
                y=[c["mean"] for c in cells],
                mode="markers",
                name=method,
                marker={"color": _colour(methods, method), "size": 10},
                text=[f"{c['family']} @ {c['length_label']}" for c in cells],
                hovertemplate="%{text}: %{y:.2f} at $%{x:.4f}<extra>" + method + "</extra>",
            )
        )
    fig.update_layout(
        height=360, template="plotly_white", xaxis_title="mean cost per query (USD)",
        yaxis={"title": "mean score", "range": [-0.03, 1.05], "tickformat": ".0%"},
        margin={"l": 50, "r": 20, "t": 20, "b": 40},
    )  # fmt: skip
    return fig


def _failure_figure(rows: Sequence[EvalRow], methods: list[str]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for status, colour in _STATUS_COLOURS.items():
        counts = [sum(1 for r in rows if r.method == m and r.status == status) for m in methods]
        if any(counts):
            fig.add_trace(go.Bar(x=methods, y=counts, name=status, marker_color=colour))
    fig.update_layout(
        barmode="stack",
        height=320,
        template="plotly_white",
        yaxis_title="samples",
        margin={"l": 50, "r": 20, "t": 20, "b": 40},
    )
    return fig


def _headline_table(summary: dict[str, Any]) -> str:
    head = "<tr><th>family</th><th>method</th><th>n</th><th>score %</th><th>95 % interval</th><th>strict %</th><th>mean cost</th><th>calls / query</th><th>does not fit</th></tr>"
    body = []
    for h in summary["headline"]:
        body.append(
            f"<tr><td>{html.escape(h['family'])}</td><td>{html.escape(h['method'])}</td>"
            f"<td class=num>{h['n']}</td><td class=num><b>{_pct(h['mean'])}</b></td>"
            f"<td class=num>{_pct(h['ci_low'])} – {_pct(h['ci_high'])}</td>"
            f"<td class=num>{_pct(h['strict_mean'])}</td><td class=num>{_money(h['cost_mean'])}</td>"
            f"<td class=num>{_fmt(h['calls_mean'], 1)}</td><td class=num>{_pct(h['overflow_rate'])} %</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def _paired_table(summary: dict[str, Any]) -> str:
    if not summary["paired"]:
        return "<p class=note>One method only: nothing to compare.</p>"
    head = "<tr><th>family</th><th>A vs B</th><th>n</th><th>A wins</th><th>ties</th><th>B wins</th><th>mean A − B</th><th>95 % interval</th><th>McNemar p</th></tr>"
    body = []
    for p in summary["paired"]:
        body.append(
            f"<tr><td>{html.escape(p['family'])}</td><td>{html.escape(p['a'])} vs {html.escape(p['b'])}</td>"
            f"<td class=num>{p['n']}</td><td class='num win'>{p['wins']}</td><td class=num>{p['ties']}</td>"
            f"<td class='num loss'>{p['losses']}</td><td class=num>{_fmt(p['mean_diff'])}</td>"
            f"<td class=num>{_fmt(p['ci_low'])} – {_fmt(p['ci_high'])}</td>"
            f"<td class=num>{_p_value(p['mcnemar_p'])}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def _cost_table(summary: dict[str, Any]) -> str:
    head = "<tr><th>method</th><th>n priced</th><th>p25</th><th>p50</th><th>p75</th><th>p95</th><th>mean</th><th>calls / query</th><th>sub-calls / query</th><th>latency p50</th><th>latency p95</th></tr>"
    body = []
    for method, s in summary["overall"].items():
        q, lat = s["cost_quantiles"], s["latency_quantiles"]
        body.append(
            f"<tr><td>{html.escape(method)}</td><td class=num>{s['cost_known']}</td>"
            + "".join(f"<td class=num>{_money(q[k])}</td>" for k in ("p25", "p50", "p75", "p95"))
            + f"<td class=num>{_money(s['cost_mean'])}</td><td class=num>{_fmt(s['calls_mean'], 1)}</td>"
            f"<td class=num>{_fmt(s['sub_calls_mean'], 1)}</td><td class=num>{_fmt(lat['p50'], 2)} s</td>"
            f"<td class=num>{_fmt(lat['p95'], 2)} s</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def _why(row: EvalRow) -> str | None:
    """What an error-less failure's row says about it (a direct call's size and window)."""
    tokens, window = row.detail.get("estimated_tokens"), row.detail.get("window")
    if row.status == "overflow" and isinstance(tokens, int) and isinstance(window, int):
        return f"about {tokens:,} tokens for a window of {window:,}"
    return None


def _failure_table(rows: Sequence[EvalRow]) -> str:
    """Runs that did not answer, by method, family and status, with one error for each."""
    groups: dict[tuple[str, str, str], list[EvalRow]] = {}
    for r in rows:
        if r.status != "answered":
            groups.setdefault((r.method, r.family, r.status), []).append(r)
    if not groups:
        return "<p class=note>Every run answered.</p>"
    head = "<tr><th>method</th><th>family</th><th>status</th><th>runs</th><th>lengths</th><th>first error</th><th>example</th></tr>"
    body = []
    for (method, family, status), mine in sorted(groups.items()):
        lengths = sorted({r.length for r in mine})
        labels = ", ".join(next(r.length_label for r in mine if r.length == n) for n in lengths)
        error = next((r.error for r in mine if r.error), None) or _why(mine[0])
        first = mine[0]
        body.append(
            f"<tr><td>{html.escape(method)}</td><td>{html.escape(family)}</td>"
            f"<td class='s-{status}'>{status}</td><td class=num>{len(mine)}</td>"
            f"<td>{html.escape(labels)}</td><td class=ans>{_short(error)}</td>"
            f"<td><a href='#{html.escape(first.sample_id)}-{html.escape(first.method)}'>"
            f"{html.escape(first.sample_id)}</a></td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def _short(text: str | None, limit: int = 160) -> str:
    if text is None:
        return "<i>none</i>"
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return html.escape(text)


def _samples(rows: Sequence[EvalRow], families: list[str]) -> str:
    parts = []
    for family in families:
        mine = sorted(
            (r for r in rows if r.family == family), key=lambda r: (r.length, r.index, r.method)
        )
        head = "<tr><th>sample</th><th>length</th><th>method</th><th>status</th><th>score</th><th>answer</th><th>gold</th><th>cost</th><th>calls</th><th>latency</th><th>trajectory</th></tr>"
        body = []
        for r in mine:
            link = (
                f"<a href='{html.escape(r.trajectory)}' title='run {html.escape(r.run_id or '')}'>open</a>"
                if r.trajectory
                else "–"
            )
            body.append(
                f"<tr id='{html.escape(r.sample_id)}-{html.escape(r.method)}'><td><code>{html.escape(r.sample_id)}</code><br><span class=note>{html.escape(r.kind)}</span></td>"
                f"<td>{r.length_label}</td><td>{html.escape(r.method)}</td>"
                f"<td class='s-{r.status}'>{r.status}</td><td class=num>{r.score:.2f}</td>"
                f"<td class=ans>{_short(r.answer)}</td><td class=ans>{_short(', '.join(r.gold))}</td>"
                f"<td class=num>{_money(r.cost)}</td><td class=num>{r.calls}</td>"
                f"<td class=num>{r.latency_s:.2f} s</td><td>{link}</td></tr>"
            )
        parts.append(
            f"<details><summary>{html.escape(family)} ({len(mine)} rows)</summary>"
            f"<table>{head}{''.join(body)}</table></details>"
        )
    return "".join(parts)


def render_report(
    rows: Sequence[EvalRow], summary: dict[str, Any], *, title: str | None = None
) -> str:
    """The report page as one string (see the module docstring)."""
    import plotly.io as pio  # type: ignore[import-untyped]

    methods: list[str] = summary["methods"]
    with_cost = _costs_known(rows)
    figures = [
        ("Accuracy against length", _accuracy_figure(summary)),
        ("Cost, calls and latency per query", _spread_figure(rows, methods)),
        ("Failures", _failure_figure(rows, methods)),
    ]
    if with_cost:
        figures.insert(2, ("Accuracy against cost", _scatter_figure(summary)))
    rendered = {
        name: pio.to_html(
            fig,
            full_html=False,
            include_plotlyjs=(i == 0),
            config={"displaylogo": False, "responsive": True},
        )
        for i, (name, fig) in enumerate(figures)
    }
    lengths = ", ".join(
        sorted(
            {r.length_label for r in rows},
            key=lambda x: next(r.length for r in rows if r.length_label == x),
        )
    )
    unit = rows[0].unit if rows else "chars"
    title = title or "Does an RLM help this model?"
    cap = summary.get("cost_cap") or {}
    spent = (
        f"spent {_money(cap.get('spent'))}"
        if with_cost
        else "cost unknown (the provider reported none; give prices)"
    )
    scatter = (
        f"<p class=note>One point per family, length and method.</p>\n"
        f"<div class=card>{rendered['Accuracy against cost']}</div>"
        if with_cost
        else "<p class=note>No model call had a known cost: give prices (<code>--price "
        "MODEL=IN,OUT</code>, or <code>prices=</code> in Python) to see what each point of "
        "score costs.</p>"
    )
    cap_note = (
        f" The cost cap of {_money(cap.get('max_cost'))} was reached; {cap.get('not_run', 0)} runs did not start."
        if cap.get("reached")
        else ""
    )
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><meta name=viewport content="width=device-width,initial-scale=1">
<title>{html.escape(title)}</title><style>{_CSS}</style></head><body><main>
<h1>{html.escape(title)}</h1>
<p class=sub>{len(rows)} runs · methods {html.escape(", ".join(methods))} · families {html.escape(", ".join(summary["families"]))} · lengths {html.escape(lengths)} ({unit}) · {spent}.{cap_note}</p>
<h2>Headline</h2>
<p class=note>Mean score per family and method with its 95 % interval (50 samples per cell give about ±14 points), the strict variant of the scoring rule, mean cost per query, and how often the direct call did not fit the model's window (it then scores 0).</p>
{_headline_table(summary)}
<h3>Paired on the same samples</h3>
<p class=note>Wins, ties and losses count samples where A scored higher, the same, or lower than B; the interval is a paired bootstrap of the mean difference; McNemar's test applies when both score 0 or 1.</p>
{_paired_table(summary)}
<h2>Accuracy against length</h2>
<p class=note>Bands are 95 % intervals. A grey band marks lengths where the direct call did not fit the model's window.</p>
<div class=card>{rendered["Accuracy against length"]}</div>
<h2>Cost, calls and latency per query</h2>
<p class=note>Means hide the long tail of RLM costs: read the quantiles.</p>
{_cost_table(summary)}
<div class=card>{rendered["Cost, calls and latency per query"]}</div>
<h2>Accuracy against cost</h2>
{scatter}
<h2>Failures</h2>
<p class=note>answered: an answer came back (right or wrong) · overflow: the prompt did not fit · no_answer: the run ended without one · limit: a budget ran out · provider_error / error: a failure · cost_cap: stopped by the eval's cap (not scored).</p>
<div class=card>{rendered["Failures"]}</div>
{_failure_table(rows)}
<h2>Every sample</h2>
<p class=note>Each RLM run links to its trajectory (JSONL). To view one, run <code>rlm-sdk serve</code>, open its page and choose <b>Open trajectory</b> with the file, or print it with <code>rlm-sdk view FILE</code>. Links are relative to this report's folder.</p>
{_samples(rows, summary["families"])}
</main><script>{_OPEN_TARGET}</script></body></html>
"""


def write_report(
    rows: Sequence[EvalRow], summary: dict[str, Any], path: str | Path, *, title: str | None = None
) -> Path:
    """Write the report page to ``path`` and return it.

    Raises:
        ImportError: plotly is not installed (``pip install 'rlm-sdk[eval]'``).
    """
    target = Path(path)
    target.write_text(render_report(rows, summary, title=title), encoding="utf-8")
    return target

"""Running an eval: samples times methods, concurrently, resumably, within a cost cap.

The unit of work is a sample: it is built once (in a thread: a 4M-token context takes
seconds) and every method still missing for it runs on that same object, so methods are
compared on byte-identical inputs. Samples run concurrently up to the provider's own bound
on requests in flight (its ``max_in_flight``) unless told otherwise; the provider's limiter
still bounds the requests themselves, sub-calls included.

Every finished (sample, method) pair is one line of ``results.jsonl``, flushed at once, so
an interrupted eval loses only what was in flight. Running again with the same folder skips
what is there, and runs again what failed for reasons a retry may fix (provider errors,
other errors, the cost cap). A method whose configuration changed under the same name is
refused, so a file never mixes two configurations under one name.

The cost cap covers the whole eval, earlier runs in the folder included. Costs are counted
as each model call finishes; when they reach the cap, no new sample starts and the runs in
flight are cancelled (their rows say ``cost_cap``, and run again on resume).

Seeds: without one, an eval draws a random base seed and keeps it in the folder's
``eval.json``, so a resumed eval builds the same samples while code a model runs in the REPL
(where this generator is importable) cannot guess them from a default. Pass ``seed`` to make
samples that any machine can build again.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel

from rlm_sdk import ConfigurationError, ModelRouter, Provider
from rlm_sdk._frontend import get_logger, load_settings

from ._methods import DirectMethod, FunctionMethod, Method, Outcome, RLMMethod, Trial
from ._rows import RESULTS, EvalRow, lines
from ._sample import Sample, Tokenizer, Unit, length_label, parse_task
from ._score import score
from ._specs import SampleSpec, specs
from ._summary import summarise

__all__ = [
    "RERUN",
    "EvalResults",
    "arun",
    "folder_seed",
    "method_from_spec",
    "resolve_methods",
    "run",
]

RERUN: frozenset[str] = frozenset({"error", "provider_error", "cost_cap"})
"""Statuses whose rows run again when an eval is resumed."""
DEFAULT_CONCURRENCY = 8


class EvalResults(BaseModel):
    """What an eval produced: every row (earlier runs' included), and where the files are."""

    rows: list[EvalRow]
    out_dir: Path
    results: Path
    summary: Path
    report: Path | None = None
    """The HTML report; ``None`` when it was not written."""
    spent: float = 0.0
    """USD spent in this folder: every attempt of every row, retried ones included."""
    stopped_by_cost_cap: bool = False
    not_run: int = 0
    """(sample, method) pairs not run because the cost cap was reached."""
    seed: int = 0
    """The base seed the samples were built from (drawn and kept in ``eval.json`` when none
    was given)."""


def _open_folder(out_dir: Path) -> list[EvalRow]:
    """Make the output folder if needed; every line of its results file so far."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return lines(out_dir / RESULTS)


SEED_FILE = "eval.json"


def folder_seed(out_dir: Path) -> int:
    """The base seed kept in ``out_dir``'s ``eval.json``, drawn at random and kept there when
    the folder has none (so a resumed eval builds the same samples)."""
    path = out_dir / SEED_FILE
    try:
        kept = json.loads(path.read_text(encoding="utf-8")).get("seed")
    except (OSError, ValueError, AttributeError):
        kept = None
    if isinstance(kept, int) and not isinstance(kept, bool):
        return kept
    seed = secrets.randbelow(2**63)
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"seed": seed}) + "\n", encoding="utf-8")
    return seed


_RLM_KEYS: dict[str, type] = {
    "name": str,
    "model": str,
    "sub_model": str,
    "max_depth": int,
    "max_iterations": int,
    "protocol": str,
    "isolation": str,
    "temperature": float,
    "max_tokens": int,
    "compact_at": float,
}
_DIRECT_KEYS: dict[str, type] = {
    "name": str,
    "model": str,
    "truncate": bool,
    "window": int,
    "reply_tokens": int,
    "max_tokens": int,
    "temperature": float,
}


def _typed(method: str, key: str, value: str, kind: type) -> Any:
    try:
        if kind is int:
            return int(value)
        if kind is float:
            return float(value)
    except ValueError:
        raise ConfigurationError(
            f"{method}: {key} must be a {kind.__name__}, not {value!r}"
        ) from None
    if kind is bool:
        if value.lower() in ("1", "true", "yes"):
            return True
        if value.lower() in ("0", "false", "no"):
            return False
        raise ConfigurationError(f"{method}: {key} must be true or false, not {value!r}")
    return value


def method_from_spec(
    text: str,
    *,
    model: str | None,
    rlm_options: Mapping[str, Any] | None = None,
    direct_options: Mapping[str, Any] | None = None,
) -> Method:
    """A built-in method from its name, with optional settings after a colon.

    ``rlm``, ``direct`` and ``direct-truncate`` take the eval's options as they are;
    ``"rlm:max_depth=2,protocol=tools"`` or ``"direct:window=32768"`` change some of them for
    this method alone, which is then named by the whole text unless ``name=`` says
    otherwise. RLM keys: model, sub_model, max_depth, max_iterations, protocol, isolation,
    temperature, max_tokens, compact_at. Direct keys: model, truncate, window, reply_tokens,
    max_tokens, temperature.

    Raises:
        ConfigurationError: an unknown method or key, or a value of the wrong kind.
    """
    base, given = parse_task(text)
    if base not in ("rlm", "direct", "direct-truncate"):
        raise ConfigurationError(
            f"unknown method {text!r}: use rlm, direct or direct-truncate (optionally with "
            "settings, as in rlm:max_depth=2), or pass a Method or an async callable"
        )
    keys = _RLM_KEYS if base == "rlm" else _DIRECT_KEYS
    options: dict[str, Any] = dict((rlm_options if base == "rlm" else direct_options) or {})
    for key, value in given.items():
        if key not in keys:
            raise ConfigurationError(
                f"method {base} has no setting {key!r} (it has: {', '.join(sorted(keys))})"
            )
        options[key] = _typed(base, key, value, keys[key])
    name = str(options.pop("name", text.strip() if given else base))
    own_model = options.pop("model", None) or model
    if base == "rlm":
        return RLMMethod(own_model, name=name, **options)
    options.setdefault("truncate", base == "direct-truncate")
    return DirectMethod(own_model, name=name, **options)


def resolve_methods(
    methods: Iterable[str | Method | Callable[..., Any]],
    *,
    model: str | None,
    rlm_options: Mapping[str, Any] | None = None,
    direct_options: Mapping[str, Any] | None = None,
) -> list[Method]:
    """Method objects from names (``rlm``, ``direct``, ``direct-truncate``, each optionally
    with settings: see :func:`method_from_spec`), objects or callables.

    Raises:
        ConfigurationError: an unknown name, or two methods with one name.
    """
    out: list[Method] = []
    for m in methods:
        if isinstance(m, Method):
            if isinstance(m, RLMMethod | DirectMethod) and m.model is None:
                m.model = model
            out.append(m)
        elif isinstance(m, str):
            out.append(
                method_from_spec(
                    m, model=model, rlm_options=rlm_options, direct_options=direct_options
                )
            )
        else:
            out.append(FunctionMethod(m))
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"two methods share a name: {names}")
    if not out:
        raise ConfigurationError("no methods to run")
    return out


def _bound(provider: Provider, model: str | None) -> int | None:
    """The provider's bound on requests in flight for ``model``, when it has one."""
    target: object = provider
    if isinstance(provider, ModelRouter) and model:
        try:
            target = provider.route(model)[0]
        except ConfigurationError:
            return None
    bound = getattr(target, "max_in_flight", None)
    return bound if isinstance(bound, int) and bound > 0 else None


class _Spend:
    """The eval's spend against its cap; cancels the runs in flight when the cap is reached."""

    def __init__(self, cap: float | None, already: float) -> None:
        self.cap = cap
        self.spent = already
        self.scopes: set[anyio.CancelScope] = set()
        self.hit = cap is not None and already >= cap

    def add(self, cost: float) -> None:
        self.spent += cost
        if self.cap is not None and not self.hit and self.spent >= self.cap:
            self.hit = True
            for scope in self.scopes:
                scope.cancel()


def _row(
    sample: Sample, method: Method, outcome: Outcome, latency: float, config: dict[str, Any]
) -> EvalRow:
    scored = score(sample, outcome.answer if outcome.status == "answered" else None)
    usage = outcome.usage
    return EvalRow(
        sample_id=sample.id,
        family=sample.family,
        kind=sample.kind,
        params=sample.params,
        seed=sample.seed,
        index=sample.index,
        length=sample.length,
        length_label=length_label(sample.length),
        unit=sample.unit,
        achieved=sample.achieved,
        method=method.name,
        method_config=config,
        answer=outcome.answer,
        gold=sample.gold,
        score=scored.score,
        strict=scored.strict,
        status=outcome.status,
        error=outcome.error,
        latency_s=round(latency, 4),
        turns=outcome.turns,
        sub_calls=outcome.sub_calls,
        depth=outcome.depth,
        calls=usage.calls,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost=usage.cost,
        models=dict(usage.models),
        run_id=outcome.run_id,
        trajectory=outcome.trajectory,
        detail=outcome.detail,
        finished_at=time.time(),
    )


async def arun(
    tasks: Sequence[str | tuple[str, Mapping[str, Any]]] = ("niah",),
    lengths: Sequence[str | int] = ("8k",),
    methods: Sequence[str | Method | Callable[..., Any]] = ("rlm", "direct"),
    *,
    model: str | None = None,
    n: int = 20,
    seed: int | None = None,
    unit: Unit = "chars",
    tokenizer: Tokenizer | None = None,
    out: str | Path = "eval-results",
    provider: Provider | None = None,
    concurrency: int | None = None,
    max_cost: float | None = None,
    prices: Mapping[str, tuple[float, float]] | None = None,
    rlm_options: Mapping[str, Any] | None = None,
    direct_options: Mapping[str, Any] | None = None,
    report: bool | None = None,
    title: str | None = None,
    on_row: Callable[[EvalRow], None] | None = None,
) -> EvalResults:
    """Run every method on every sample, write the results, the summary and the report.

    Args:
        tasks: family names, ``"family:key=value,..."`` strings, or ``(family, params)``.
        lengths: context lengths (``"8k"``, ``"512k"``, ``"4M"``, or numbers).
        methods: ``"rlm"``, ``"direct"``, ``"direct-truncate"``, each optionally with
            settings (``"rlm:max_depth=2,protocol=tools"``), :class:`Method` objects
            (:class:`RLMMethod` in any configuration), or async callables ``fn(sample)``.
        model: the model of the built-in methods that name none (default: ``RLM_MODEL``).
        n: samples per (task, length) cell.
        seed: the base seed; every sample's seed derives from it, so the same arguments
            give the same samples. ``None`` (the default): a random seed, kept in the
            folder's ``eval.json`` and used again when the folder is resumed.
        unit: ``"chars"`` (default) or ``"tokens"`` (needs ``tokenizer``).
        tokenizer: counts tokens, for ``unit="tokens"``.
        out: the output folder: ``results.jsonl``, ``trajectories/``, ``summary.json``,
            ``report.html``. An existing one is resumed.
        provider: serve every model through this provider (default: a
            :class:`~rlm_sdk.ModelRouter` made here and closed at the end).
        concurrency: samples in flight at once (default: the provider's bound on requests
            in flight, else 8).
        max_cost: stop the eval at this many USD (over the folder's earlier runs too).
        prices: USD per million (prompt, completion) tokens, for models whose provider
            reports no cost.
        rlm_options: :class:`~rlm_sdk.RecursiveLM` keywords for the ``"rlm"`` method.
        direct_options: :class:`DirectMethod` keywords for the direct methods.
        report: write ``report.html``: always (``True``; needs ``rlm-sdk[eval]``), never
            (``False``), or when plotly is installed (``None``, the default).
        title: the report's title.
        on_row: called with each row as it is written.

    Raises:
        ConfigurationError: a bad argument, or a method whose configuration differs from
            the one recorded under its name in ``out``.
    """
    specs(tasks, lengths, n, seed=0, unit=unit)  # every argument checked before any file
    if unit == "tokens" and tokenizer is None:
        raise ConfigurationError("unit='tokens' needs a tokenizer (a str -> int counter)")
    model = model or load_settings().model
    chosen = resolve_methods(
        methods, model=model, rlm_options=rlm_options, direct_options=direct_options
    )
    out_dir = Path(out)
    results_path = out_dir / RESULTS
    every_line = await anyio.to_thread.run_sync(_open_folder, out_dir)
    if seed is None:
        seed = await anyio.to_thread.run_sync(folder_seed, out_dir)
    todo_specs = specs(tasks, lengths, n, seed=seed, unit=unit)
    previous = {(r.sample_id, r.method): r for r in every_line}
    shared = provider or ModelRouter()
    price_table = dict(prices or {})
    log = get_logger(eval_out=str(out_dir))
    opened: list[Method] = []
    try:
        for method in chosen:
            await method.open(shared, price_table)
            opened.append(method)
        configs = {m.name: m.config() for m in chosen}
        for row in previous.values():
            if row.method in configs and row.method_config != configs[row.method]:
                raise ConfigurationError(
                    f"{results_path} has method {row.method!r} with another configuration "
                    f"({row.method_config}); use another folder or another method name"
                )
        spend = _Spend(max_cost, math.fsum(r.cost or 0.0 for r in every_line))
        first_model = next(
            (m.model for m in chosen if isinstance(m, RLMMethod | DirectMethod) and m.model), model
        )
        bound = concurrency or _bound(shared, first_model) or DEFAULT_CONCURRENCY
        limiter = anyio.CapacityLimiter(bound)
        pending = {
            spec.id: [
                m for m in chosen
                if (spec.id, m.name) not in previous or previous[(spec.id, m.name)].status in RERUN
            ]
            for spec in todo_specs
        }  # fmt: skip
        not_run = 0
        log.info(
            "rlm.eval_started",
            samples=len(todo_specs),
            methods=[m.name for m in chosen],
            concurrency=bound,
        )
        with results_path.open("a", encoding="utf-8") as sink:

            def write(row: EvalRow) -> None:
                previous[(row.sample_id, row.method)] = row
                sink.write(row.model_dump_json() + "\n")
                sink.flush()
                if on_row is not None:
                    on_row(row)

            async def one(spec: SampleSpec, todo: list[Method]) -> None:
                nonlocal not_run
                async with limiter:
                    if spend.hit:
                        not_run += len(todo)
                        return
                    sample = await anyio.to_thread.run_sync(spec.build, tokenizer)
                    for method in todo:
                        if spend.hit:
                            not_run += 1
                            continue
                        trial = Trial(shared, out_dir, price_table, on_cost=spend.add)
                        started = time.perf_counter()
                        outcome: Outcome | None = None
                        with anyio.CancelScope() as scope:
                            spend.scopes.add(scope)
                            try:
                                outcome = await method.run(sample, trial)
                            except Exception as err:  # one failing sample must not end the eval
                                log.warning(
                                    "rlm.eval_method_failed",
                                    sample=spec.id,
                                    method=method.name,
                                    error=repr(err),
                                )
                                outcome = Outcome(
                                    answer=None,
                                    status="error",
                                    error=f"{type(err).__name__}: {err}",
                                )
                            finally:
                                spend.scopes.discard(scope)
                        if outcome is None:  # cancelled by the cost cap
                            outcome = Outcome(answer=None, status="cost_cap", usage=trial.usage)
                        write(
                            _row(
                                sample,
                                method,
                                outcome,
                                time.perf_counter() - started,
                                configs[method.name],
                            )
                        )

            async with anyio.create_task_group() as tg:
                for spec in todo_specs:
                    if pending[spec.id]:
                        tg.start_soon(one, spec, pending[spec.id])
    finally:
        for method in opened:
            await method.aclose()
        if provider is None:
            await shared.aclose()
    wanted = {s.id for s in todo_specs}
    rows = [r for r in previous.values() if r.sample_id in wanted and r.method in configs]
    spec_order = {s.id: i for i, s in enumerate(todo_specs)}
    method_order = {m.name: j for j, m in enumerate(chosen)}
    rows.sort(key=lambda r: (spec_order[r.sample_id], method_order[r.method]))  # as asked
    summary = summarise(rows)
    summary["seed"] = seed
    summary["cost_cap"] = {
        "max_cost": max_cost,
        "spent": spend.spent,
        "reached": spend.hit,
        "not_run": not_run,
    }
    summary_path = out_dir / "summary.json"
    text = json.dumps(summary, indent=2, sort_keys=True)
    await anyio.to_thread.run_sync(lambda: summary_path.write_text(text, encoding="utf-8"))
    report_path = await anyio.to_thread.run_sync(
        _write_report, rows, summary, out_dir, report, title
    )
    log.info("rlm.eval_finished", rows=len(rows), spent=spend.spent, cost_cap_reached=spend.hit)
    return EvalResults(
        rows=rows,
        out_dir=out_dir,
        results=results_path,
        summary=summary_path,
        report=report_path,
        spent=spend.spent,
        stopped_by_cost_cap=spend.hit,
        not_run=not_run,
        seed=seed,
    )


def _write_report(
    rows: list[EvalRow],
    summary: dict[str, Any],
    out_dir: Path,
    wanted: bool | None,
    title: str | None,
) -> Path | None:
    if wanted is False:
        return None
    from ._report import plotly_missing, write_report

    missing = plotly_missing()
    if missing is not None:
        if wanted:
            raise ConfigurationError(missing)
        get_logger().warning("rlm.eval_no_report", reason=missing)
        return None
    return write_report(rows, summary, out_dir / "report.html", title=title)


def run(*args: Any, **kwargs: Any) -> EvalResults:
    """Sync twin of :func:`arun` (same arguments), on a fresh event loop."""
    return anyio.run(lambda: arun(*args, **kwargs))

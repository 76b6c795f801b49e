"""``rlm_sdk.eval``: does an RLM help your model, at your lengths, on your budget?

Generated long-context tasks (no downloads), each family's published scoring rule, and a
runner that puts the RLM, a direct long-context call and your own methods on byte-identical
samples, then writes a resumable results file, a JSON summary and a self-contained HTML
report::

    from rlm_sdk import eval as rlm_eval

    results = await rlm_eval.arun(
        ["niah", "aggregate"], ["8k", "64k"], ["rlm", "direct"],
        model="openai:gpt-5-mini", n=20, out="eval-results", max_cost=5.0,
    )

An extension, not a part of the core: it uses only the public API of
:class:`~rlm_sdk.RecursiveLM` and the providers. The report's charts need the
``rlm-sdk[eval]`` extra (plotly), imported only when a report is written.
"""

from ._families import FAMILIES, get_family
from ._methods import (
    DirectMethod,
    FunctionMethod,
    Method,
    MethodFunction,
    Outcome,
    RLMMethod,
    Status,
    Trial,
    direct_prompt,
)
from ._oracles import oracle_policy
from ._rows import EvalRow, load_rows
from ._runner import EvalResults, arun, run
from ._sample import Family, Sample, Tokenizer, Unit, parse_length
from ._score import Scored, score, score_answer
from ._specs import SampleSpec, specs
from ._summary import summarise

__all__ = [
    "FAMILIES",
    "DirectMethod",
    "EvalResults",
    "EvalRow",
    "Family",
    "FunctionMethod",
    "Method",
    "MethodFunction",
    "Outcome",
    "RLMMethod",
    "Sample",
    "SampleSpec",
    "Scored",
    "Status",
    "Tokenizer",
    "Trial",
    "Unit",
    "arun",
    "direct_prompt",
    "generate",
    "get_family",
    "load_rows",
    "oracle_policy",
    "parse_length",
    "run",
    "score",
    "score_answer",
    "specs",
    "summarise",
    "write_report",
]


def generate(
    family: str,
    length: str | int = "8k",
    *,
    seed: int = 0,
    params: dict[str, object] | None = None,
    unit: Unit = "chars",
    tokenizer: Tokenizer | None = None,
) -> Sample:
    """One sample of ``family`` at ``length``: a pure function of its arguments."""
    spec = SampleSpec(
        family=family,
        params=get_family(family).params(params),
        length=parse_length(length),
        unit=unit,
        seed=seed,
    )
    return spec.build(tokenizer)


def write_report(results: EvalResults, *, title: str | None = None) -> str:
    """Write (again) the HTML report of ``results`` next to its results file; returns its path.

    Raises:
        ConfigurationError: plotly is not installed (``pip install 'rlm-sdk[eval]'``).
    """
    from rlm_sdk import ConfigurationError

    from ._report import plotly_missing
    from ._report import write_report as _write

    missing = plotly_missing()
    if missing is not None:
        raise ConfigurationError(missing)
    summary = summarise(results.rows)
    return str(_write(results.rows, summary, results.out_dir / "report.html", title=title))

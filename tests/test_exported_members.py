"""The public surface: a complete, sorted __all__, and sync twins that mirror their async methods."""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path

import rlm_sdk
from rlm_sdk import RecursiveLM


def test_all_is_sorted_and_complete() -> None:
    """rlm_sdk.__all__ is sorted, every name exists, and every public attribute is listed."""
    names = rlm_sdk.__all__
    assert names == sorted(names)
    for name in names:
        assert hasattr(rlm_sdk, name), name
    public = {n for n in vars(rlm_sdk) if not n.startswith("_") and n not in {"annotations"}}
    modules = {n for n in public if inspect.ismodule(getattr(rlm_sdk, n))}
    assert public - modules <= set(names), sorted(public - modules - set(names))


def _params(fn: object) -> list[tuple[str, object, object]]:
    sig = inspect.signature(fn)  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


def test_sync_twins_take_the_same_parameters() -> None:
    """complete/acomplete and batch/abatch have identical parameters."""
    assert _params(RecursiveLM.complete) == _params(RecursiveLM.acomplete)
    assert _params(RecursiveLM.batch) == _params(RecursiveLM.abatch)


def test_version_matches_pyproject() -> None:
    """rlm_sdk.__version__ (also in the providers' User-Agent) is the packaged version."""
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text())["project"]
    assert rlm_sdk.__version__ == project["version"]

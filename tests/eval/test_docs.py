"""docs_multihop: the gold answer re-derived by following the documents' facts by exact name."""

from __future__ import annotations

import re

import pytest

from rlm_sdk.eval import generate


def documents(context: str) -> dict[str, list[str]]:
    """Every document's body by its title; a title may (wrongly) repeat, so keep a list."""
    docs: dict[str, list[str]] = {}
    for block in context.split("\n\n"):
        title, _, body = block.partition("\n")
        assert title.startswith("## "), block[:80]
        docs.setdefault(title[3:], []).append(body)
    return docs


def fact(docs: dict[str, list[str]], name: str, pattern: str) -> str:
    """The one fact ``pattern`` finds about exactly ``name``."""
    (body,) = docs[name]  # exactly one document per name on the path
    found = re.findall(re.escape(name) + pattern, body)
    assert len(found) == 1
    return str(found[0])


def brute(context: str, query: str) -> str:
    docs = documents(context)
    if m := re.search(r"name\. (.+?) was mentored by someone\.", query):
        who = fact(docs, m.group(1), r" was mentored by (.+?)\.")
    else:
        m = re.search(r"the company that (.+?) works for", query)
        assert m
        who = m.group(1)
    company = fact(docs, who, r" works for (.+?)\.")
    city = fact(docs, company, r" is headquartered in (.+?)\.")
    if "In which city" in query:
        return city
    return fact(docs, city, r" was founded in (\d+)\.")


@pytest.mark.parametrize("hops", [2, 3, 4])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_gold_follows_the_facts_by_exact_name(hops: int, seed: int) -> None:
    """Following each fact by the exact name gives the gold answer, however many hops."""
    s = generate("docs_multihop", "32k", seed=seed, params={"hops": hops})
    assert [brute(s.context, s.query)] == s.gold
    assert s.kind == f"{hops}-hop"


def test_each_document_on_the_path_has_a_hard_negative() -> None:
    """Each entity on the path has a document for a longer name that starts with it, with another fact."""
    s = generate("docs_multihop", "32k", seed=9, params={"hops": 3})
    docs = documents(s.context)
    start = re.search(r"the company that (.+?) works for", s.query)
    assert start
    company = fact(docs, start.group(1), r" works for (.+?)\.")
    for name in (start.group(1), company):
        decoys = [t for t in docs if t.startswith(name) and t != name]
        assert decoys, name
    decoy = next(t for t in docs if t.startswith(start.group(1)) and t != start.group(1))
    assert fact(docs, decoy, r" works for (.+?)\.") != company


def test_without_decoys_no_name_extends_another_on_the_path() -> None:
    """decoys=false leaves no hard negative for the starting person."""
    s = generate("docs_multihop", "32k", seed=9, params={"hops": 3, "decoys": False})
    start = re.search(r"the company that (.+?) works for", s.query)
    assert start
    docs = documents(s.context)
    assert [t for t in docs if t.startswith(start.group(1))] == [start.group(1)]

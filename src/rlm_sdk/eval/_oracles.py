"""TEST/DEMO DOUBLES: scripted "oracle" models that solve each task family the way a capable
model would, for proving the eval offline and for ``rlm-sdk eval --offline``.

They are not language models. :func:`oracle_policy` returns a reply function for
:class:`~rlm_sdk.testing.ScriptedProvider` (or, as a body function, ``FakeChatServer``).
As a root model it reads the query (as any model does), writes one REPL program for the
task, and answers from what the REPL printed; it never sees the gold answer, the seed or the
generator. The aggregate and pairs programs classify the records with ``llm_query_batched``
sub-calls, which the same double answers as a sub-model, labelling each question from its
wording. As a direct model (the direct method's prompt) it runs the same program over the
text it was sent, so a context cut in the middle loses what the cut removed.

``failure`` makes a double fail in one known way, so tests can check that scores fall by
exactly what the scoring rule says:

* ``first_only``: niah and chains answer only the first value or name found;
* ``off_by_2``: aggregate answers every number 2 too high (0.75 ** 2 = 0.5625);
* ``drop_one``: pairs leave the last pair out;
* ``decoy``: docs_multihop looks names up loosely and follows a hard negative;
* ``wrong_letter``: code_lookup answers the letter after the right one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ._methods import DIRECT_SYSTEM_PROMPT

__all__ = ["FAILURES", "classify_question", "oracle_policy", "solve_program"]

FAILURES = ("first_only", "off_by_2", "drop_one", "decoy", "wrong_letter")
LABELS = (
    "numeric value, entity, location, description and abstract concept, abbreviation, human being"
)
_CLASSIFY_HEAD = "Label each question below with the kind of answer it asks for"
_DIRECT_SPLIT = "\n\n----------\n\n"
F = "```"


def classify_question(question: str) -> str:
    """What a capable sub-model answers when asked which kind of answer a question wants."""
    q = question.strip()
    if q.startswith("Who "):
        return "human being"
    if "stand for" in q or "short for" in q or "abbreviation for" in q:
        return "abbreviation"
    if q.startswith(("Where ", "In which country", "What city")):
        return "location"
    if q.startswith(("How many", "How tall", "How much", "What year")):
        return "numeric value"
    if q.startswith(("What does the word", "Why ", "How does", "What is the meaning")):
        return "description and abstract concept"
    return "entity"


_RECORDS = f"""\
import collections, datetime
records = []
for line in context.splitlines():
    if line.startswith("Date: "):
        d, u, t = line.split(" || ", 2)
        records.append((datetime.datetime.strptime(d[6:], "%b %d, %Y").date(), u[6:], t[10:]))
texts = sorted({{t for _, _, t in records}})
chunks = [texts[i : i + 250] for i in range(0, len(texts), 250)]
head = "{_CLASSIFY_HEAD}, one of: {LABELS}. Reply with one label per line, in the same order.\\n\\n"
replies = llm_query_batched([head + "\\n".join(c) for c in chunks])
label = {{}}
for c, r in zip(chunks, replies):
    for t, l in zip(c, r.splitlines()):
        label[t] = l.strip().lower()
def count(lab, user=None, after=None):
    return sum(1 for d, u, t in records if label.get(t) == lab and (user is None or u == user) and (after is None or d > after))
print(len(records), "records,", len(label), "labelled")
"""


def _when(text: str) -> str:
    return f'datetime.datetime.strptime("{text}", "%b %d, %Y").date()'


def _aggregate(query: str, failure: str | None) -> str:
    q = query
    m = re.search(r"How many instances would be labelled (.+?)\?", q)
    if m:
        code = f"answer = count({m.group(1)!r})"
    elif m := re.search(r"Which label is the (most|least) common", q):
        pick = "max" if m.group(1) == "most" else "min"
        labs = [x.strip() for x in LABELS.split(", ")]
        code = f"answer = {pick}({labs!r}, key=count)"
    elif m := re.search(
        r"Is the label (.+?) more common than, less common than, or the same frequency as the label (.+?)\?",
        q,
    ):
        code = (
            f"a, b = count({m.group(1)!r}), count({m.group(2)!r})\n"
            'answer = "more common than" if a > b else "less common than" if a < b else "same frequency as"'
        )
    elif m := re.search(r"How many instances from user (\d+) would be labelled (.+?)\?", q):
        code = f"answer = count({m.group(2)!r}, user={m.group(1)!r})"
    elif m := re.search(r"Which user has the most instances labelled (.+?)\?", q):
        code = f"users = collections.Counter(u for d, u, t in records if label.get(t) == {m.group(1)!r})\nanswer = users.most_common(1)[0][0]"
    elif m := re.search(r"In which month do the instances labelled (.+?) peak\?", q):
        code = (
            f"months = collections.Counter((d.year, d.month) for d, u, t in records if label.get(t) == {m.group(1)!r})\n"
            "y, mo = months.most_common(1)[0][0]\n"
            "answer = datetime.date(y, mo, 1).strftime('%B %Y')"
        )
    elif m := re.search(
        r"How many instances labelled (.+?) are dated after (\w{3} \d{2}, \d{4})\?", q
    ):
        code = f"answer = count({m.group(1)!r}, after={_when(m.group(2))})"
    else:
        code = 'answer = "unknown"'
    if failure == "off_by_2":
        code += "\nif str(answer).isdigit():\n    answer = str(int(answer) + 2)"
    return _RECORDS + code + '\nprint("ANSWER:", answer)\n'


def _pairs(query: str, failure: str | None) -> str:
    m = re.search(
        r"each of the two users has at least (\d+) instances(?: dated after (\w{3} \d{2}, \d{4}))? labelled (.+?) or (.+?)\.",
        query,
    )
    if m:
        after = _when(m.group(2)) if m.group(2) else "None"
        code = (
            f"users = sorted({{u for _, u, _ in records}})\n"
            f"ok = [u for u in users if count({m.group(3)!r}, u, {after}) + count({m.group(4)!r}, u, {after}) >= {m.group(1)}]\n"
            "pairs = sorted((a, b) for a in ok for b in ok if a < b)"
        )
    elif m := re.search(
        r"one user has exactly (\d+) instances labelled (.+?) and the other has at least (\d+) instances labelled (.+?)\.",
        query,
    ):
        code = (
            "users = sorted({u for _, u, _ in records})\n"
            f"p = [u for u in users if count({m.group(2)!r}, u) == {m.group(1)}]\n"
            f"q = [u for u in users if count({m.group(4)!r}, u) >= {m.group(3)}]\n"
            "pairs = sorted({(min(a, b), max(a, b)) for a in p for b in q if a != b})"
        )
    else:
        code = "pairs = []"
    if failure == "drop_one":
        code += "\npairs = pairs[:-1]"
    code += '\nanswer = "\\n".join(f"({a}, {b})" for a, b in pairs) or "[]"'
    return _RECORDS + code + '\nprint("PAIRS:", len(pairs))\nprint("ANSWER:", answer)\n'


def _niah(query: str, failure: str | None) -> str:
    m = re.search(r"belongs? to (.+?)\? ", query)
    keys = m.group(1).split(" and ") if m else []
    take = "found[:1]" if failure == "first_only" else "found"
    return (
        "import re\nfound = []\n"
        f"for key in {keys!r}:\n"
        '    found += re.findall(r"The hidden \\w+ that belongs to " + re.escape(key) + r" is (.+?)\\.$", context, re.M)\n'
        f'answer = ", ".join({take})\nprint("ANSWER:", answer)\n'
    )


def _chains(query: str, failure: str | None) -> str:
    m = re.search(r"assigned the value (\d+)", query)
    value = m.group(1) if m else ""
    take = "names[:1]" if failure == "first_only" else "names"
    return (
        "import re\n"
        'assigned = dict(re.findall(r"^VAR ([A-Z]{5}) = (.+)$", context, re.M))\n'
        "def resolve(name, hops=0):\n"
        "    value = assigned.get(name, '')\n"
        "    return resolve(value[4:], hops + 1) if value.startswith('VAR ') and hops < 100 else value\n"
        f"names = [n for n in assigned if resolve(n) == {value!r}]\n"
        f'answer = ", ".join({take})\nprint("ANSWER:", answer)\n'
    )


def _docs(query: str, failure: str | None) -> str:
    patterns = [
        (r"In which city is the company that (.+?) works for headquartered\?", 2),
        (
            r"In what year was the city founded in which the company that (.+?) works for is headquartered\?",
            3,
        ),
        (r"name\. (.+?) was mentored by someone\.", 4),
    ]
    start, hops = "", 3
    for pattern, n in patterns:
        if m := re.search(pattern, query):
            start, hops = m.group(1), n
            break
    lookup = (
        "    near = [t for t in docs if t.startswith(name) and t != name]\n    doc = docs[near[0]] if near else docs[name]\n"
        if failure == "decoy"
        else "    doc = docs[name]\n"
    )
    steps = ["who = start"]
    if hops == 4:
        steps.append('who = fact(who, r" was mentored by (.+?)\\.")')
    steps += [
        'company = fact(who, r" works for (.+?)\\.")',
        'answer = fact(company, r" is headquartered in (.+?)\\.")',
    ]
    if hops >= 3:
        steps.append('answer = fact(answer, r" was founded in (\\d+)\\.")')
    return (
        "import re\ndocs = {}\n"
        'for block in context.split("\\n\\n"):\n'
        '    if block.startswith("## "):\n'
        '        title, _, body = block.partition("\\n")\n'
        "        docs[title[3:].strip()] = body\n"
        "def fact(name, pattern):\n" + lookup + "    return re.search(pattern, doc).group(1)\n"
        f"start = {start!r}\n" + "\n".join(steps) + '\nprint("ANSWER:", answer)\n'
    )


_CODE = """\
import ast, importlib, importlib.abc, importlib.util, re, sys
files = {}
for part in re.split(r"^# ===== file: ", context, flags=re.M):
    path, _, source = part.partition(" =====\\n")
    if path.endswith(".py"):
        files[path.split("/")[-1][:-3]] = source
trees = {name: ast.parse(src) for name, src in files.items()}
functions, calls, keys = {}, {}, {}
for mod, tree in trees.items():
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            full = f"{mod}.{node.name}"
            functions[node.name] = full
            called, read = [], []
            for sub in ast.walk(node):
                if isinstance(sub, ast.Call):
                    f = sub.func
                    if isinstance(f, ast.Name):
                        called.append(f"{mod}.{f.id}")
                    elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                        if f.value.id == "config" and f.attr == "get":
                            read.append(sub.args[0].value)
                        else:
                            called.append(f"{f.value.id}.{f.attr}")
            calls[full], keys[full] = called, read
def reach(full):
    seen, stack = set(), list(calls.get(full, []))
    while stack:
        f = stack.pop()
        if f not in seen:
            seen.add(f)
            stack.extend(calls.get(f, []))
    return seen
print(len(files), "files,", len(functions), "functions")
"""

_IMPORT = """\
class Loader(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == PKG:
            return importlib.util.spec_from_loader(name, self, is_package=True)
        if name.startswith(PKG + ".") and name[len(PKG) + 1 :] in files:
            return importlib.util.spec_from_loader(name, self)
        return None
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        if module.__name__ != PKG:
            exec(files[module.__name__[len(PKG) + 1 :]], module.__dict__)
loader = Loader()
sys.meta_path.insert(0, loader)
try:
    value = str(getattr(importlib.import_module(f"{PKG}.{ENTRY_MOD}"), ENTRY_FN)())
finally:
    sys.meta_path.remove(loader)
    for name in [n for n in sys.modules if n == PKG or n.startswith(PKG + ".")]:
        del sys.modules[name]
"""


def _code(query: str, failure: str | None) -> str:
    pkg = m.group(1) if (m := re.search(r"the Python package (\w+),", query)) else "pkg"
    options = re.findall(r"^([A-D])\) (.+)$", query, re.M)
    entry = re.search(r"when (\w+)\.(\w+)\(\) is called|What does (\w+)\.(\w+)\(\) return", query)
    mod, fn = ("", "")
    if entry:
        mod, fn = (
            (entry.group(1), entry.group(2)) if entry.group(1) else (entry.group(3), entry.group(4))
        )
    code = _CODE + f"options = {options!r}\nPKG, ENTRY_MOD, ENTRY_FN = {pkg!r}, {mod!r}, {fn!r}\n"
    if "Which of these functions runs" in query:
        code += "hit = reach(f'{ENTRY_MOD}.{ENTRY_FN}')\nletter = next(l for l, o in options if functions.get(o) in hit)\n"
    elif "return?" in query:
        code += _IMPORT + "letter = next(l for l, o in options if o == value)\n"
    elif "Which configuration key" in query:
        code += (
            "full = f'{ENTRY_MOD}.{ENTRY_FN}'\n"
            "read = {k for f in reach(full) | {full} for k in keys.get(f, [])}\n"
            "letter = next(l for l, o in options if o in read)\n"
        )
    else:
        code += (
            "called = {c.split('.')[-1] for cs in calls.values() for c in cs}\n"
            "letter = next(l for l, o in options if o not in called)\n"
        )
    if failure == "wrong_letter":
        code += "letter = 'ABCD'[('ABCD'.index(letter) + 1) % 4]\n"
    return code + 'answer = letter\nprint("ANSWER:", answer)\n'


_PROGRAMS: dict[str, Callable[[str, str | None], str]] = {
    "niah": _niah,
    "aggregate": _aggregate,
    "pairs": _pairs,
    "chains": _chains,
    "docs_multihop": _docs,
    "code_lookup": _code,
}


def _family(query: str) -> str | None:
    """Which family a query belongs to, from its wording (as a model reads a task)."""
    if "Python package" in query:
        return "code_lookup"
    if "collection of short documents" in query:
        return "docs_multihop"
    if "List all pairs of user ids" in query:
        return "pairs"
    if "Each line of the context is a record" in query:
        return "aggregate"
    if "Which variables are assigned" in query:
        return "chains"
    if "hidden" in query and "belong" in query:
        return "niah"
    return None


def solve_program(query: str, failure: str | None = None) -> str | None:
    """The REPL program the double writes for ``query``; it binds ``answer`` and prints it."""
    family = _family(query)
    return None if family is None else _PROGRAMS[family](query, failure)


def _classify_reply(prompt: str) -> str:
    questions = prompt.split("\n\n", 1)[1].splitlines() if "\n\n" in prompt else []
    return "\n".join(classify_question(q) for q in questions)


def _direct(text: str, failure: str | None) -> str:
    """The direct call: the same program, run over the text this model was sent."""
    context, _, query = text.rpartition(_DIRECT_SPLIT)
    program = solve_program(query, failure)
    if program is None:
        return "I cannot tell what is asked."
    namespace: dict[str, Any] = {
        "context": context,
        "llm_query_batched": lambda prompts: [_classify_reply(p) for p in prompts],
        "print": lambda *args, **kwargs: None,
    }
    try:
        exec(compile(program, "<oracle>", "exec"), namespace)  # the double's own program
    except Exception:  # a cut context can leave the program nothing to find
        return "I could not find the answer in the text."
    return f"Answer: {namespace.get('answer', '')}"


def oracle_policy(failure: str | None = None) -> Callable[[Any], str]:
    """A TEST/DEMO double's reply function (see the module docstring).

    Use it as ``ScriptedProvider(oracle_policy())``; it answers root turns, sub-calls and
    direct calls for every task family.

    Raises:
        ValueError: ``failure`` is not one of :data:`FAILURES`.
    """
    if failure is not None and failure not in FAILURES:
        raise ValueError(f"failure is one of {', '.join(FAILURES)}, not {failure!r}")

    def reply(request: Any) -> str:
        messages = request.messages
        first = messages[0]
        if first.role != "system":  # a sub-call
            prompt = str(messages[-1].content)
            return _classify_reply(prompt) if prompt.startswith(_CLASSIFY_HEAD) else "NONE"
        if first.content == DIRECT_SYSTEM_PROMPT:
            return _direct(str(messages[-1].content), failure)
        query_message = str(messages[1].content)
        m = re.search(r"The query: (.*?)\n\nYou have not looked", query_message, re.S)
        query = m.group(1) if m else query_message
        printed = "\n".join(str(x.content) for x in messages[2:] if x.role == "user")
        if "ANSWER:" in printed:
            answer = printed.rsplit("ANSWER:", 1)[1].strip()
            if "\n" in answer or not answer:
                return "The REPL built the answer.\nFINAL_VAR(answer)"
            return f"The REPL printed the answer.\nFINAL({answer})"
        if any(x.role == "assistant" for x in messages):
            return "The program found nothing.\nFINAL(unknown)"
        program = solve_program(query, failure)
        if program is None:
            return "FINAL(I do not know this task)"
        return f"I will solve this with one program over `context`.\n{F}repl\n{program}{F}"

    return reply

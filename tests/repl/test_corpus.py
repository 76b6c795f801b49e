"""Corpus: files on disk listed by the parent (never read there), read only by the worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlm_sdk import ConfigurationError
from rlm_sdk.repl import Corpus, REPLSession
from rlm_sdk.repl._corpus import is_paths

pytestmark = pytest.mark.integration


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder of three documents, one in a subfolder, and a symbolic link that is skipped."""
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "b.txt").write_text("beta line\nthe code is 7141\n")
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "c.md").write_text("# gamma\nno code here\n")
    (root / "link.txt").symlink_to(tmp_path / "elsewhere.txt")
    (tmp_path / "elsewhere.txt").write_text("outside the corpus\n")
    return root


def test_a_folder_lists_its_files_in_name_order(folder: Path) -> None:
    """Names are relative to the folder, sizes come from stat, links are not followed."""
    corpus = Corpus(folder)
    assert [f.name for f in corpus.files] == ["a.txt", "b.txt", "sub/c.md"]
    assert [f.size for f in corpus.files] == [6, 27, 21]
    assert corpus.total_bytes == 54 and corpus.roots == (str(folder.resolve()),)
    text = corpus.describe()
    assert "3 documents" in text and "'a.txt'" in text and "7141" not in text


def test_bad_paths_are_configuration_errors(tmp_path: Path) -> None:
    """A missing file, an empty folder and an empty list say what is wrong."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigurationError, match="cannot read"):
        Corpus(tmp_path / "missing.txt")
    with pytest.raises(ConfigurationError, match="holds no file"):
        Corpus(tmp_path / "empty")
    with pytest.raises(ConfigurationError, match="empty list"):
        Corpus([])


def test_what_counts_as_paths(tmp_path: Path) -> None:
    """A path or a list of paths is files; text, and lists of text, are not."""
    assert is_paths(tmp_path) and is_paths([tmp_path, tmp_path])
    assert not is_paths(str(tmp_path)) and not is_paths([]) and not is_paths(["a", tmp_path])


async def test_the_worker_reads_the_folder_and_nothing_else(folder: Path) -> None:
    """context is a collection of documents read on use; files outside the corpus stay closed."""
    async with REPLSession(folder) as repl:
        listing = await repl.run_cell("print(len(context), context.names)")
        grep = await repl.run_cell("print(context.grep(r'code is \\d+'))")
        nested = await repl.run_cell("print(context['sub/c.md'].text.splitlines()[0])")
        outside = await repl.run_cell(f"open({str(folder.parent / 'elsewhere.txt')!r}).read()")
    assert listing.stdout == "3 ['a.txt', 'b.txt', 'sub/c.md']\n"
    assert grep.stdout == "[('b.txt', 'the code is 7141')]\n"
    assert nested.stdout == "# gamma\n"
    if "landlock_fs" not in " ".join(repl.isolation_layers):
        pytest.skip("this host has no Landlock: the worker's reads are not confined")
    assert outside.error is not None and outside.error.type == "PermissionError"


async def test_one_file_is_a_str_like_view(folder: Path) -> None:
    """One path gives a mapped view: byte offsets, slices as str, lines, grep and find."""
    async with REPLSession(folder / "b.txt") as repl:
        result = await repl.run_cell(
            "at = context.find('7141')\n"
            "print(len(context), at, context[at:at + 4], list(context.lines())[1])\n"
            "print(context.grep('beta'), 'code' in context, context.count('e'))"
        )
    assert result.error is None, result.error
    assert result.stdout == "27 22 7141 the code is 7141\n['beta line'] True 4\n"


async def test_a_list_of_files_keeps_their_paths_as_names(folder: Path) -> None:
    """A list of paths is a collection named by path; the worker may read those files only."""
    files = [folder / "a.txt", folder / "sub" / "c.md"]
    async with REPLSession(files) as repl:
        result = await repl.run_cell(
            "print([d.name.endswith(n) for d, n in zip(context, ['a.txt', 'c.md'])], context[1].size)"
        )
        other = await repl.run_cell(f"open({str(folder / 'b.txt')!r}).read()")
    assert result.stdout == "[True, True] 21\n"
    if "landlock_fs" not in " ".join(repl.isolation_layers):
        pytest.skip("this host has no Landlock: the worker's reads are not confined")
    assert other.error is not None and other.error.type == "PermissionError"


async def test_a_run_over_a_folder_reads_it_in_the_worker_only(folder: Path) -> None:
    """RecursiveLM takes a Path: the model is told the shape, and answers from what it grepped."""
    import re

    from rlm_sdk import CompletionRequest, RecursiveLM
    from rlm_sdk.testing import ScriptedProvider

    def policy(request: CompletionRequest) -> str:
        seen = request.messages[-1].content
        if len(request.messages) == 2:
            return "```repl\nprint(context.grep(r'code is \\d+'))\n```"
        return "FINAL(" + re.search(r"code is (\d+)", seen).group(1) + ")"  # type: ignore[union-attr]

    provider = ScriptedProvider(policy)
    async with RecursiveLM("m", provider=provider) as rlm:
        result = await rlm.acomplete(folder, "What is the code?")
    assert result.answer == "7141"
    system = provider.requests[0].messages[0].content
    assert "3 documents" in system and "'b.txt'" in system
    assert all("7141" not in m.content for m in provider.requests[0].messages)

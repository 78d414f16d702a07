"""The documentation runs: every Python block of README.md and docs/*.md, as written.

Each page's blocks run in order, in one fresh namespace per *chain*: a block starts a new chain
(a fresh namespace, as a reader who copies that one block gets), unless the line right before
its fence marks it as a fragment of the previous block. Blocks written as an interactive
session (``>>>`` lines) run as doctests, so their printed output is checked too. Each page runs
in its own temporary working directory, so files a block writes never land in the repository.

A block is marked by an HTML comment on the line right before its opening fence (invisible in
the rendered site); CONTRIBUTING.md documents the convention:

- ``<!-- docs-test: continue -->``: a fragment; runs in the previous block's namespace.
- ``<!-- docs-test: skip (reason) -->``: not run; the reason is required.

A marker that is misspelt, lacks its reason, or is not followed by a Python block fails the
test instead of being ignored, and so does an untagged fence that holds ``>>>`` lines.

The API reference must render cross-references as links: the last tests check that the docs
build's hook (``docs/_ext/roles.py``) leaves no Sphinx role raw in any docstring, that roles
naming public names become links, and that every exported name is on a page of the reference.
"""

from __future__ import annotations

import builtins
import doctest
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
_MARK = re.compile(r"^\s*<!--\s*docs-test:(?P<body>.*?)-->\s*$")
_SKIP = re.compile(r"^skip\s*\((?P<reason>.*)\)$")
_PYTHON = {"python", "py", "python3", "pycon"}


class MarkerError(ValueError):
    """A ``docs-test`` marker the test cannot honour (misspelt, without reason, misplaced)."""


@dataclass(frozen=True)
class Block:
    """One fenced Python block: its code, the 1-based line of its first code line, its mark."""

    page: str
    line: int
    code: str
    mark: str  # "run", "continue" or "skip"
    reason: str = ""

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def is_session(self) -> bool:
        return self.code.lstrip().startswith(">>>")


def _parse_mark(body: str, where: str) -> tuple[str, str]:
    body = body.strip()
    if body == "continue":
        return "continue", ""
    skip = _SKIP.match(body)
    if skip:
        reason = skip.group("reason").strip()
        if not reason:
            raise MarkerError(
                f"{where}: `docs-test: skip` needs a reason. Received: {body!r}\n"
                "- Say why the block cannot run on CI, e.g. "
                "`<!-- docs-test: skip (needs a GPU) -->`."
            )
        return "skip", reason
    if body.startswith("skip"):
        raise MarkerError(
            f"{where}: a skip marker must give its reason in parentheses. Received: {body!r}\n"
            "- Write `<!-- docs-test: skip (reason) -->`."
        )
    raise MarkerError(
        f"{where}: unknown docs-test marker. Received: {body!r}\n"
        "- Use `<!-- docs-test: continue -->` or `<!-- docs-test: skip (reason) -->`."
    )


def parse_blocks(text: str, page: str) -> list[Block]:
    """The Python blocks of one Markdown page, in order, with their marks.

    Raises:
        MarkerError: on a marker that is unknown, lacks a reason, is not followed by a Python
            block, or marks the first block of a page as ``continue`` (or one after a skipped
            block); or on an untagged fence that holds ``>>>`` lines.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: tuple[str, str, int] | None = None  # (mark, reason, line of the marker)
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = _MARK.match(line)
        if marker:
            if pending is not None:
                raise MarkerError(f"{page}:{pending[2]}: a docs-test marker must be followed by "
                                  "a Python block, not by another marker.")
            pending = (*_parse_mark(marker.group("body"), f"{page}:{i + 1}"), i + 1)
            i += 1
            continue
        fence = _FENCE.match(line)
        if not fence:
            if pending is not None:
                raise MarkerError(
                    f"{page}:{pending[2]}: a docs-test marker must be on the line right before "
                    "a ```python fence.\n- Move the marker, or remove it."
                )
            i += 1
            continue
        ticks, indent = fence.group("ticks"), len(fence.group("indent"))
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(ticks):
            end += 1
        body = [ln[indent:] if not ln[:indent].strip() else ln.lstrip() for ln in lines[i + 1:end]]
        info = fence.group("info").lower()
        code = "\n".join(body) + "\n"
        if info in _PYTHON:
            mark, reason = ("run", "") if pending is None else pending[:2]
            block = Block(page, i + 2, code, mark, reason)
            if mark == "continue" and (not blocks or blocks[-1].mark == "skip"):
                raise MarkerError(
                    f"{block.where}: `docs-test: continue` needs a previous block that runs."
                    "\n- Make the block self-contained, or remove the skip before it."
                )
            blocks.append(block)
        elif pending is not None:
            raise MarkerError(f"{page}:{pending[2]}: a docs-test marker must precede a Python "
                              f"block; this one precedes a {info or 'plain'!r} block.")
        elif not info and code.lstrip().startswith(">>>"):
            raise MarkerError(
                f"{page}:{i + 1}: an untagged block holds Python (`>>>` lines), which the docs "
                "test cannot see.\n- Tag the fence ```python so it runs as a doctest."
            )
        pending = None
        i = end + 1
    if pending is not None:
        raise MarkerError(f"{page}:{pending[2]}: a docs-test marker ends the page.")
    return blocks


def chains(blocks: list[Block]) -> list[list[Block]]:
    """The runnable blocks grouped by namespace: a chain starts at every unmarked block."""
    out: list[list[Block]] = []
    for block in blocks:
        if block.mark == "run":
            out.append([block])
        elif block.mark == "continue":
            out[-1].append(block)
    return out


def _run(block: Block, namespace: dict) -> None:
    if block.is_session:
        test = doctest.DocTestParser().get_doctest(
            block.code, namespace, block.where, block.page, block.line - 1)
        runner = doctest.DocTestRunner(
            optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        report: list[str] = []
        runner.run(test, out=report.append, clear_globs=False)
        if runner.failures:
            raise AssertionError("".join(report))
        return
    # Leading newlines make tracebacks give the line numbers of the Markdown page.
    source = "\n" * (block.line - 1) + block.code
    exec(compile(source, block.page, "exec"), namespace)  # noqa: S102


def _page_id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _runnable_pages() -> list[Path]:
    return [p for p in PAGES if re.search(r"^[ \t]*(```|~~~)\s*(python|py|python3|pycon)\b",
                                          p.read_text(encoding="utf-8"), re.MULTILINE)]


def run_page(page: Path, workdir: Path) -> list[str]:
    """Run one page's chains in ``workdir``; one message (with traceback) per failing chain."""
    blocks = parse_blocks(page.read_text(encoding="utf-8"), _page_id(page))
    failures = []
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        for chain in chains(blocks):
            namespace = {"__name__": "__main__", "__builtins__": builtins}
            for block in chain:
                try:
                    _run(block, namespace)
                except (Exception, SystemExit) as error:  # report every chain
                    trace = "".join(traceback.format_exception(error))
                    failures.append(f"{block.where}: {type(error).__name__}\n{trace[-3000:]}")
                    break
    finally:
        os.chdir(previous)
        if "keras" in sys.modules:
            sys.modules["keras"].utils.clear_session()
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")
    return failures


def _main(argv: list[str]) -> None:
    """``python tests/test_docs.py OUT.json WORKDIR PAGE...``: run pages, write the failures."""
    out, workdir, pages = Path(argv[0]), Path(argv[1]), argv[2:]
    results = {}
    for page in pages:
        (workdir / page).mkdir(parents=True)
        start, cpu = time.perf_counter(), time.process_time()
        failures = run_page(ROOT / page, workdir / page)
        results[page] = {"failures": failures, "seconds": time.perf_counter() - start,
                         "cpu_seconds": time.process_time() - cpu}
        out.write_text(json.dumps(results))  # after every page: a crash keeps what ran


@pytest.fixture(scope="module")
def page_failures(request, tmp_path_factory) -> dict[str, list[str]]:
    """Every selected page, run in ONE subprocess (fresh namespaces, a temp cwd per page).

    One process, not one per page, because importing TensorFlow costs seconds; a process at
    all, because the pages may change process-wide state (op determinism, seeds, the Keras
    session) that must not leak into the rest of the suite.
    """
    selected = sorted({item.callspec.params["page"] for item in request.session.items
                       if getattr(item, "originalname", None) == "test_page_runs_as_written"},
                      key=str)
    workdir = tmp_path_factory.mktemp("docs")
    out = workdir / "failures.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1",
               MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join(
                   [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    done = subprocess.run(
        [sys.executable, __file__, str(out), str(workdir), *map(_page_id, selected)],
        capture_output=True, text=True, timeout=1200, env=env, cwd=workdir,
    )
    results = json.loads(out.read_text()) if out.exists() else {}
    crash = (f"the docs runner exited with status {done.returncode}:\n"
             f"{done.stdout[-1500:]}\n{done.stderr[-3000:]}")
    return {_page_id(p): results.get(_page_id(p), {"failures": [crash]})["failures"]
            for p in selected}


@pytest.mark.parametrize("page", _runnable_pages(), ids=_page_id)
def test_page_runs_as_written(page, page_failures):
    failures = page_failures[_page_id(page)]
    assert not failures, "\n\n".join(failures)


def test_every_page_parses_and_every_page_with_python_runs():
    runs = {}
    for page in PAGES:  # raises MarkerError on any marker the runner could not honour
        runs[_page_id(page)] = parse_blocks(page.read_text(encoding="utf-8"), _page_id(page))
    assert [b.mark for b in runs["README.md"]] == ["run"]
    assert sum(len(v) for v in runs.values()) >= 30
    assert set(_page_id(p) for p in _runnable_pages()) == {k for k, v in runs.items() if v}


# --- the marker convention itself ---------------------------------------------------------


def _page(*parts: str) -> str:
    return "\n".join(parts) + "\n"


def test_blocks_start_fresh_unless_marked_continue():
    text = _page("# t", "```python", "a = 1", "```", "text",
                 "<!-- docs-test: continue -->", "```python", "b = a", "```",
                 "```python", "c = 3", "```", "```bash", "make demo", "```")
    blocks = parse_blocks(text, "p.md")
    assert [(b.mark, b.line) for b in blocks] == [("run", 3), ("continue", 8), ("run", 11)]
    assert [[b.line for b in chain] for chain in chains(blocks)] == [[3, 8], [11]]
    namespace: dict = {"__builtins__": builtins}
    for block in chains(blocks)[0]:
        _run(block, namespace)
    assert namespace["b"] == 1


def test_skip_needs_a_reason_and_is_not_run():
    ok = parse_blocks(_page("<!-- docs-test: skip (needs a GPU) -->", "```python",
                            "raise SystemExit", "```"), "p.md")
    assert [(b.mark, b.reason) for b in ok] == [("skip", "needs a GPU")]
    assert chains(ok) == []
    for bad in ("skip", "skip ()", "skip (  )", "skip: no GPU"):
        with pytest.raises(MarkerError, match="reason"):
            parse_blocks(_page(f"<!-- docs-test: {bad} -->", "```python", "x = 1", "```"), "p.md")


@pytest.mark.parametrize("text, match", [
    (_page("<!-- docs-test: contiune -->", "```python", "x = 1", "```"), "unknown"),
    (_page("<!-- docs-test: continue -->", "```python", "x = 1", "```"), "previous block"),
    (_page("<!-- docs-test: skip (why) -->", "```python", "x = 1", "```",
           "<!-- docs-test: continue -->", "```python", "y = x", "```"), "previous block"),
    (_page("<!-- docs-test: skip (why) -->", "", "```python", "x = 1", "```"), "right before"),
    (_page("<!-- docs-test: skip (why) -->", "```bash", "ls", "```"), "precede a Python"),
    (_page("```python", "x = 1", "```", "<!-- docs-test: continue -->"), "ends the page"),
    (_page("```", ">>> 1 + 1", "2", "```"), "Tag the fence"),
], ids=["misspelt", "continue-first", "continue-after-skip", "not-adjacent", "not-python",
        "at-the-end", "untagged-session"])
def test_a_marker_the_runner_cannot_honour_is_refused(text, match):
    with pytest.raises(MarkerError, match=match):
        parse_blocks(text, "p.md")


def test_session_blocks_run_as_doctests_and_check_their_output():
    good, bad = (parse_blocks(_page("```python", ">>> 1 + 1", out, "```"), "p.md")[0]
                 for out in ("2", "3"))
    _run(good, {"__builtins__": builtins})
    with pytest.raises(AssertionError, match="Expected"):
        _run(bad, {"__builtins__": builtins})


def test_a_failing_block_reports_its_markdown_line():
    (block,) = parse_blocks(_page("# t", "", "```python", "x = 1", "y = undefined", "```"),
                            "p.md")
    with pytest.raises(NameError) as info:
        _run(block, {"__builtins__": builtins})
    assert info.traceback[-1].lineno + 1 == 5  # pytest's line numbers are 0-based


# --- the API reference: one page per area, cross-references rendered as links ---------------


def _roles():
    """``docs/_ext/roles.py``, the Griffe extension the docs build runs (needs griffe)."""
    pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location("_docs_roles", ROOT / "docs/_ext/roles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def package():
    """seqprep as the docs build loads it: statically, with Griffe, from this checkout."""
    roles = _roles()
    import griffe

    return roles, griffe.load("seqprep", search_paths=[str(ROOT)])


@pytest.mark.parametrize("text, expected", [
    (":class:`BucketSampler`", "[`BucketSampler`][seqprep.planning._sampler.BucketSampler]"),
    (":class:`~seqprep.BucketSampler`",
     "[`BucketSampler`][seqprep.planning._sampler.BucketSampler]"),
    (":func:`seqprep.bucketed_dataset`",
     "[`seqprep.bucketed_dataset`][seqprep.running._tfdata.bucketed_dataset]"),
    (":meth:`BucketSampler.plan <seqprep.BucketSampler.plan>`",
     "[`BucketSampler.plan`][seqprep.planning._sampler.BucketSampler.plan]"),
    (":py:func:`~seqprep.inputs._padding.pad_sequences`",
     "[`pad_sequences`][seqprep.inputs._padding.pad_sequences]"),
    (":class:`seqprep.layers.PackedRNN`", "[`seqprep.layers.PackedRNN`][seqprep.layers.PackedRNN]"),
    (":func:`plan_tbptt`", "[`plan_tbptt`][seqprep.planning._windows.plan_tbptt]"),
    (":class:`!Bucketer`", "`Bucketer`"),                       # Sphinx's "do not link"
    (":func:`_part_specs`", "`_part_specs`"),                   # private: code, no link
    (":class:`seqprep.inputs._kernel.Table`", "`seqprep.inputs._kernel.Table`"),  # private module
    (":func:`warnings.warn`", "`warnings.warn`"),               # outside seqprep
    (":func:`no_such_name`", "`no_such_name`"),
    ("a :class:`Bucketer` and a :func:`padding_report`.",
     "a [`Bucketer`][seqprep.planning._boundaries.Bucketer] and a "
     "[`padding_report`][seqprep.planning._report.padding_report]."),
], ids=lambda v: v if v.startswith(":") else None)
def test_roles_become_links_or_code(package, text, expected):
    roles, pkg = package
    resolver = roles.Resolver(pkg)
    assert roles.rewrite(text, resolver) == expected


def test_a_bare_method_role_links_to_the_method_of_its_class(package):
    roles, pkg = package
    resolver = roles.Resolver(pkg)
    sampler = pkg["planning._sampler.BucketSampler"]
    # inherited from a private base and shown on BucketSampler's entry, under its own path
    assert resolver("state_dict", sampler) == "seqprep.planning._sampler.BucketSampler.state_dict"
    assert resolver("plan", sampler.members["batches"]) == (
        "seqprep.planning._sampler.BucketSampler.plan")


def test_no_docstring_keeps_a_raw_role_and_public_targets_link(package):
    roles, pkg = package
    resolver = roles.Resolver(pkg)
    exported = set(roles.lazy_exports(pkg))
    before, unlinked = 0, []
    for obj in roles.walk(pkg):
        if obj.docstring is None:
            continue
        for match in roles.ROLE.finditer(obj.docstring.value):
            before += 1
            title, target = roles.split_role(match["body"])
            name = (target or "").rsplit(".", 1)[-1]
            if target and name in exported and resolver(target, obj) is None:
                unlinked.append(f"{obj.path}: {match[0]}")
    assert before > 100  # the docstrings do use roles: this test checks something
    assert not unlinked, "roles to public names that would not link:\n" + "\n".join(unlinked)
    roles.rewrite_package(pkg)
    left = [f"{obj.path}: {m[0]}" for obj in roles.walk(pkg) if obj.docstring is not None
            for m in roles.ANY_ROLE.finditer(obj.docstring.value)]
    assert not left, "raw roles the docs hook leaves in the API reference:\n" + "\n".join(left)


def test_every_exported_name_has_one_line_on_an_api_page(package):
    roles, pkg = package
    pages = roles.directives()
    assert len(pages) >= 8
    listed = [path for paths in pages.values() for path in paths]
    assert len(listed) == len(set(listed)), "a name is listed twice in docs/api/"
    problems = []
    for path in listed:
        obj = roles.lookup(pkg, path)
        if obj is None or obj.path != path:
            problems.append(f"`::: {path}` does not name the object where it is defined"
                            + (f" (that is {obj.path})" if obj else ""))
    for name, module in sorted(roles.lazy_exports(pkg).items()):
        obj = roles.lookup(pkg, f"{module}.{name}")
        if obj is None or obj.path not in listed:
            where = obj.path if obj else f"{module}.{name}"
            problems.append(f"seqprep.{name} is on no API page\n- Add the line `::: {where}` "
                            "to its area's page in docs/api/ (see docs/api.md).")
    assert not problems, "\n".join(problems)


def test_markdown_pages_have_no_raw_roles():
    roles = _roles()
    raw = [f"{_page_id(p)}: {m[0]}" for p in [*PAGES, *sorted((ROOT / "docs/api").glob("*.md"))]
           for m in roles.ANY_ROLE.finditer(p.read_text(encoding="utf-8"))]
    assert not raw, "\n".join(raw)


def test_the_role_helpers_examples_hold():
    roles = _roles()
    failures, tried = doctest.testmod(roles, optionflags=doctest.ELLIPSIS)
    assert tried >= 4 and failures == 0


if __name__ == "__main__":
    _main(sys.argv[1:])


def test_architecture_names_every_module():
    # Every module file under seqprep/ is named on the architecture page by its path relative to
    # seqprep/ (`running/_tfdata.py`), and every such path the page names exists.
    package = ROOT / "seqprep"
    page = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`([\w/]+\.py)`", page))
    modules = {p.relative_to(package).as_posix() for p in package.rglob("*.py")}
    assert {"__init__.py", "running/_tfdata.py", "planning/_sampler.py"} <= modules
    assert not modules - named, f"not named: {sorted(modules - named)}"
    stale = {n for n in named - modules if not n.startswith("tests/")}
    assert not stale, f"named but not in seqprep/: {sorted(stale)}"

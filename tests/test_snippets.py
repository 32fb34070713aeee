"""Every shell and Python snippet of README.md and of the site's pages runs as written.

The fenced code blocks of each page are read from its Markdown source and run
the way a reader would run them once ``XBKG_DATA`` names the data folder
("Where the data are" in the README and in getting started):

- Python blocks (``python``, ``py``, ``pycon``, MyST ``{code-cell}``, ...) of
  one page run in order, in one namespace, in a fresh interpreter started in
  an empty temporary folder;
- shell blocks (``sh``, ``bash``, ``shell``, ``console``) of one page run in
  order, each through ``bash -e -o pipefail``, in another empty temporary folder;
- both with ``XBKG_DATA`` set to the test data and ``MPLBACKEND=Agg``, and with
  this interpreter's scripts (``python``, ``xbkg``) first on the ``PATH``.

A block is left out only when the line before it (blank lines aside) is
``<!-- not-tested: REASON -->`` with a reason; such blocks are still
syntax-checked. A block without a language, or with one this test does not
know, fails: label it (``text`` for formulas and other plain text), so that
nothing is left out silently.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import DATA_DIR, ROOT, require


def site_pages() -> list[str]:
    """README.md and every Markdown page of the site (the user guide, the tutorials' index, ...)."""
    docs = ROOT / "docs"
    pages = [
        p.relative_to(ROOT).as_posix()
        for p in docs.rglob("*.md")
        if not ({"_build", "_templates", "examples"} & set(p.relative_to(docs).parts))
        and not p.relative_to(docs).as_posix().startswith("api/generated/")
    ]
    # docs/examples links to examples/, whose pages are Python scripts (test_examples.py)
    pages += [p.relative_to(ROOT).as_posix() for p in (ROOT / "examples").glob("*.md")]
    return ["README.md", *sorted(pages)]


PAGES = site_pages()

PYTHON = {"python", "py", "python3", "ipython", "ipython3", "pycon"}
SHELL = {"sh", "bash", "shell", "console", "shell-session"}
#: Fences that hold no code to run: plain text and MyST directives other than code.
NOT_CODE = {"text", "none", "output", "math"}
CODE_DIRECTIVES = {"{code-cell}", "{code-block}", "{code}", "{sourcecode}"}

OPENING = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
MARKER = re.compile(r"^\s*<!--\s*not-tested(?P<rest>.*?)-->\s*$")
#: A backslash followed by blanks (and maybe a comment) does not continue the line.
BROKEN_CONTINUATION = re.compile(r"\\[ \t]+(#.*)?$")

TIMEOUT = 600  # seconds, per interpreter or shell block


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # line of the page holding the block's first line of code
    info: str
    code: str
    skip_reason: str | None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def kind(self) -> str:
        """'python', 'shell', 'text' (nothing to run), or 'unknown'."""
        words = self.info.split()
        if not words:
            return "unknown"
        first = words[0].lower()
        if first.startswith("{"):
            if first not in CODE_DIRECTIVES:
                return "text"  # a MyST directive: toctree, eval-rst, note, ...
            first = words[1].lower() if len(words) > 1 else "python"
        if first in PYTHON or first.startswith("python"):
            return "python"
        if first in SHELL:
            return "shell"
        if first in NOT_CODE:
            return "text"
        return "unknown"

    @property
    def language(self) -> str:
        words = self.info.split()
        if words and words[0].startswith("{") and len(words) > 1:
            return words[1].lower()
        return words[0].lower() if words else ""

    def source(self) -> str:
        """The code a reader pastes: prompts and printed output removed."""
        lines = self.code.splitlines()
        if self.info.split()[0] in CODE_DIRECTIVES:  # MyST options (':tags: ...') first
            k = 0
            while k < len(lines) and lines[k].startswith(":"):
                lines[k] = ""  # blanked, not removed: line numbers stay those of the page
                k += 1
        if self.language == "pycon":
            lines = [
                ln[4:] if ln.startswith((">>> ", "... ")) else "" for ln in lines
            ]  # keeps line numbers
        elif self.language in ("console", "shell-session"):
            kept, continued = [], False
            for ln in lines:
                if ln.startswith("$ ") or continued:
                    kept.append(ln[2:] if ln.startswith("$ ") and not continued else ln)
                    continued = ln.rstrip().endswith("\\")
                else:
                    kept.append("")
            lines = kept
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Page:
    blocks: tuple[Block, ...]
    problems: tuple[str, ...]  # markers without a reason or without a block, unclosed fences


@functools.cache
def read_page(page: str) -> Page:
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    marker: tuple[int, str | None] | None = None  # (line, reason) waiting for its block
    i = 0
    while i < len(lines):
        text = lines[i]
        found = MARKER.match(text)
        opening = OPENING.match(text)
        if found:
            if marker:
                problems.append(f"{page}:{marker[0]}: not-tested marker without a code block")
            rest = found["rest"].strip()
            reason = rest[1:].strip() if rest.startswith(":") else ""
            if not reason:
                problems.append(
                    f"{page}:{i + 1}: give the reason: <!-- not-tested: REASON -->, got {text!r}"
                )
            marker = (i + 1, reason or None)
            i += 1
            continue
        if not opening:
            if text.strip() and marker:
                problems.append(f"{page}:{marker[0]}: not-tested marker without a code block")
                marker = None
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not closing.match(lines[j]):
            body.append(lines[j][indent:] if lines[j][:indent].isspace() else lines[j])
            j += 1
        if j == len(lines):
            problems.append(f"{page}:{i + 1}: code fence never closed")
        blocks.append(
            Block(
                page=page,
                line=i + 2,
                info=opening["info"].strip(),
                code="\n".join(body),
                skip_reason=marker[1] if marker else None,
            )
        )
        marker = None
        i = j + 1
    if marker:
        problems.append(f"{page}:{marker[0]}: not-tested marker without a code block")
    return Page(tuple(blocks), tuple(problems))


def all_blocks() -> list[Block]:
    return [block for page in PAGES for block in read_page(page).blocks]


def snippet_env() -> dict[str, str]:
    scripts = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "XBKG_DATA": str(DATA_DIR),
        "MPLBACKEND": "Agg",
        "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")]),
    }


# Runs the Python blocks of one page in one namespace; tracebacks name the page
# and its line numbers (each block is compiled at its place in the page).
RUNNER = """
import json, sys
namespace = {"__name__": "__main__"}
for block in json.load(open(sys.argv[1], encoding="utf-8")):
    print(f"--- {block['where']}", flush=True)
    source = "\\n" * (block["line"] - 1) + block["source"]
    exec(compile(source, block["page"], "exec"), namespace)
"""


def data_snapshot() -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(DATA_DIR)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in DATA_DIR.rglob("*")
        if p.is_file()
    }


@functools.cache
def run_page(page: str, work: Path) -> tuple[Path, Path]:
    """Run the snippets of ``page`` in ``work/python`` and ``work/shell``; return both."""
    env = snippet_env()
    if work.exists():  # a first attempt failed: start again from empty folders
        shutil.rmtree(work)
    python_dir, shell_dir = work / "python", work / "shell"
    python_dir.mkdir(parents=True)
    shell_dir.mkdir(parents=True)
    blocks = [b for b in read_page(page).blocks if b.skip_reason is None]
    python = [b for b in blocks if b.kind == "python"]
    if python:
        listing = work / "python-blocks.json"
        listing.write_text(
            json.dumps(
                [
                    {"page": b.page, "line": b.line, "where": b.where, "source": b.source()}
                    for b in python
                ]
            ),
            encoding="utf-8",
        )
        result = subprocess.run(
            [sys.executable, "-c", RUNNER, str(listing)],
            cwd=python_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert result.returncode == 0, (
            f"the Python snippets of {page} failed:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    for block in (b for b in blocks if b.kind == "shell"):
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", block.source()],
            cwd=shell_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert result.returncode == 0, (
            f"the shell snippet at {block.where} failed (exit status {result.returncode}):\n"
            f"{block.source()}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    return python_dir, shell_dir


@pytest.fixture(scope="module")
def work_root(tmp_path_factory, dr1_dir, crab4_dir, gammacat_path, hgps_path) -> Path:
    """Where the pages' snippets run (the fixtures make sure the data are there)."""
    return tmp_path_factory.mktemp("snippets")


def test_every_block_is_run_or_says_why_not():
    problems = [p for page in PAGES for p in read_page(page).problems]
    for block in all_blocks():
        if block.kind == "unknown":
            problems.append(
                f"{block.where}: fence {block.info!r}: give the language (python, sh, ...) "
                "or 'text' for text that is not run"
            )
        if block.skip_reason is not None and block.kind == "text":
            problems.append(f"{block.where}: a not-tested marker on text that is never run")
    assert not problems, "\n".join(problems)
    blocks = all_blocks()
    run = [b for b in blocks if b.kind in ("python", "shell") and b.skip_reason is None]
    skipped = [b for b in blocks if b.skip_reason is not None]
    assert len(run) >= 8, [b.where for b in run]
    # what is left out, and why, shows in the test report (pytest -rA or -s)
    for block in skipped:
        print(f"not tested: {block.where} ({block.kind}): {block.skip_reason}")


def test_shell_lines_continue_where_they_seem_to():
    # 'cmd \  # comment' ends the command: the next line would run on its own
    broken = [
        f"{block.where}+{k}: {line.strip()!r}"
        for block in all_blocks()
        if block.kind == "shell"
        for k, line in enumerate(block.source().splitlines())
        if BROKEN_CONTINUATION.search(line)
    ]
    assert not broken, "a backslash must end the line (put comments above the command):\n" + (
        "\n".join(broken)
    )


def test_blocks_left_out_are_still_valid_code():
    for block in all_blocks():
        if block.skip_reason is None:
            continue
        if block.kind == "shell":
            result = subprocess.run(
                ["bash", "-n", "-c", block.source()], capture_output=True, text=True
            )
            assert result.returncode == 0, f"{block.where}: {result.stderr}"
        elif block.kind == "python":
            compile("\n" * (block.line - 1) + block.source(), block.page, "exec")


def test_snippets_name_no_machine_paths():
    # the data are reached through XBKG_DATA only, never through where they sit here
    for block in all_blocks():
        for path in {str(DATA_DIR), str(ROOT), str(Path.home())}:
            assert path not in block.code, f"{block.where} names {path}: use $XBKG_DATA"


def pages_with_code() -> list[str]:
    return [
        page
        for page in PAGES
        if any(
            b.kind in ("python", "shell") and b.skip_reason is None for b in read_page(page).blocks
        )
    ]


@pytest.mark.parametrize("page", pages_with_code())
def test_page_snippets_run_as_written(page, work_root):
    python = "".join(b.source() for b in read_page(page).blocks if b.kind == "python")
    if re.search(r"^\s*(from|import) gammapy", python, re.MULTILINE):
        require("gammapy")  # the test extra's: skip without it, fail in CI
    before = data_snapshot()
    run_page(page, work_root / page.replace("/", "-"))
    assert data_snapshot() == before, "the snippets changed the data folder"


def test_readme_python_example_and_command_line_write_the_same_files(work_root):
    python_dir, shell_dir = run_page("README.md", work_root / "README.md")
    python_out, shell_out = python_dir / "background", shell_dir / "background"
    names = sorted(p.name for p in python_out.iterdir())
    assert names == sorted(p.name for p in shell_out.iterdir())
    assert any(name.startswith("background_run_") for name in names)  # per-run models
    for name in names:
        assert (python_out / name).read_bytes() == (shell_out / name).read_bytes(), name

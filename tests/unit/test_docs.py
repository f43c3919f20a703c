"""Every ```python block in README.md and docs/*.md runs, so the docs cannot drift.

Blocks of one page run in order in one namespace, inside a fresh temporary
directory (pages create their own database files there). The namespace is a
real module registered in ``sys.modules`` while the page runs (named
``docs_<page>``), so classes a page defines can be pickled and stored like the
classes of an application module. A block fenced as ```python no-run is shown
but not executed (for fragments such as a class rename that needs an old
module). A ```text block that follows a ```python block with nothing but
blank lines between them is that block's expected output: what the block
prints must equal it (trailing spaces aside).

Relative links between pages must point to existing files.

Each page must run in a few seconds: a page over ``PAGE_TIME_LIMIT_S`` fails,
so a slow or hanging example is noticed (the limit is generous to stay
deterministic on a loaded machine).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import time
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
FENCE = re.compile(r"^```([\w -]*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)  # any fenced block
PAGE_TIME_LIMIT_S = 30.0


def python_blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text(encoding="utf-8"))


def blocks_with_expected_output(page: Path) -> list[tuple[str, str | None]]:
    """``(code, expected output or None)`` for each executed block, in page order."""
    text = page.read_text(encoding="utf-8")
    fences = list(FENCE.finditer(text))
    result: list[tuple[str, str | None]] = []
    for index, fence in enumerate(fences):
        if fence.group(1).strip() != "python":
            continue
        expected = None
        if index + 1 < len(fences):
            following = fences[index + 1]
            between = text[fence.end() : following.start()]
            if following.group(1).strip() == "text" and not between.strip():
                expected = following.group(2)
        result.append((fence.group(2), expected))
    assert [code for code, _ in result] == python_blocks(page)
    return result


def normalized(output: str) -> str:
    return "\n".join(line.rstrip() for line in output.strip("\n").splitlines())


def page_module_name(page: Path) -> str:
    return "docs_" + re.sub(r"\W", "_", page.stem.lower())


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_page_examples_run(page: Path, tmp_path: Path) -> None:
    name = page_module_name(page)
    assert name not in sys.modules, f"module name {name} is already taken"
    module = types.ModuleType(name)
    previous = os.getcwd()
    started_s = time.monotonic()
    sys.modules[name] = module
    os.chdir(tmp_path)
    try:
        for number, (block, expected) in enumerate(blocks_with_expected_output(page), 1):
            where = f"{page.name}[block {number}]"
            code = compile(block, where, "exec")
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                exec(code, module.__dict__)
            if expected is not None:
                assert normalized(printed.getvalue()) == normalized(expected), where
    finally:
        os.chdir(previous)
        del sys.modules[name]
    elapsed_s = time.monotonic() - started_s
    assert elapsed_s < PAGE_TIME_LIMIT_S, f"{page.name} took {elapsed_s:.1f} s"


def test_no_run_blocks_are_rare() -> None:
    """Blocks that are not executed are for fragments only, never for whole examples."""
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        assert text.count("```python no-run") <= 3, f"{page.name} has many unexecuted blocks"


def test_every_page_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"


LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_relative_links_point_to_existing_files() -> None:
    for page in PAGES:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith(("#", "mailto:")):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            assert path.exists(), f"{page.name} links to missing {target}"

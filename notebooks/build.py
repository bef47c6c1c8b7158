#!/usr/bin/env python
"""Sync the notebooks from their text sources (NAME.md) and store fresh outputs in NAME.ipynb.

    python notebooks/build.py               # sync and execute every notebook
    python notebooks/build.py 03 08         # only the notebooks whose names start so
    python notebooks/build.py --no-execute  # sync only: the .ipynb keep the outputs of cells
                                            # whose text did not change

The cells live in the MyST Markdown files (NAME.md), which a teacher edits in any editor or in
Jupyter (jupytext.toml keeps NAME.md and NAME.ipynb paired). This script holds no cell text:
it reads each NAME.md with jupytext, runs it with nbclient in this folder, in one fresh
temporary archive (the embedded server; DICOMWEB_URL and DICOMWEB_TOKEN are ignored) and with a
temporary TMPDIR, as `python -m pytest notebooks` does, and writes NAME.ipynb with the outputs
that nbval compares against. Every temporary folder is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat
from jupytext.combine import combine_inputs_with_outputs
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

HERE = Path(__file__).resolve().parent
TEXT_FORMAT = "md:myst"


def sources(only: list[str]) -> list[Path]:
    """The text sources NAME.md in this folder, by name, whose names start with ``only``."""
    found = sorted(path for path in HERE.glob("[0-9][0-9]-*.md"))
    return [path for path in found if not only or any(path.name.startswith(p) for p in only)]


def read_pair(source: Path) -> nbformat.NotebookNode:
    """The cells of ``source``, with the ids, metadata and outputs of its .ipynb where the
    cells still match."""
    notebook = jupytext.read(source, fmt=TEXT_FORMAT)
    paired = source.with_suffix(".ipynb")
    if paired.exists():
        notebook = combine_inputs_with_outputs(notebook, jupytext.read(paired), fmt=TEXT_FORMAT)
    return notebook


def execute(notebook: nbformat.NotebookNode) -> None:
    """Run every cell in a new kernel started in this folder, keeping the outputs."""
    NotebookClient(notebook, timeout=600, kernel_name="python3", record_timing=False,
                   store_widget_state=True,
                   resources={"metadata": {"path": str(HERE)}}).execute()


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour codes (tracebacks from the kernel carry them)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def main(argv: list[str] | None = None) -> int:
    """Sync, and unless ``--no-execute`` run, the notebooks; 1 when one of them failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="name prefixes, e.g. 01 05")
    parser.add_argument("--no-execute", action="store_true", help="sync without running")
    parser.add_argument("--data", help="archive folder to use (default: a fresh temporary one)")
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="dicomframes-nb-"))
    (scratch / "tmp").mkdir()
    os.environ["DICOMFRAMES_DATA"] = args.data or str(scratch / "archive")
    os.environ["TMPDIR"] = str(scratch / "tmp")        # the kernels' temporary folders
    for variable in ("DICOMWEB_URL", "DICOMWEB_TOKEN"):
        os.environ.pop(variable, None)
    failed = []
    try:
        for source in sources(args.only):
            notebook = read_pair(source)
            if not args.no_execute:
                started = time.perf_counter()
                try:
                    execute(notebook)
                except CellExecutionError as error:
                    failed.append(source.stem)
                    print(f"{source.stem}: FAILED\n{strip_ansi(str(error))[-3000:]}",
                          file=sys.stderr)
                    continue
                print(f"{source.stem}: executed in {time.perf_counter() - started:.1f} s")
            nbformat.validate(notebook)
            jupytext.write(notebook, source.with_suffix(".ipynb"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The teaching notebooks: each NAME.md text source and its NAME.ipynb hold the same cells,
the tutorial's 19 steps are all there, and no stored output shows a credential."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]-*.md"))
TEXT_FORMAT = "md:myst"


def cells(notebook: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """(cell type, source) of every cell."""
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


def test_every_notebook_has_a_text_source_and_the_other_way_round() -> None:
    assert SOURCES, "no text sources in notebooks/"
    assert {p.stem for p in SOURCES} == {p.stem for p in NOTEBOOKS.glob("[0-9][0-9]-*.ipynb")}


def test_jupytext_pairs_the_two_formats() -> None:
    config = tomllib.loads((NOTEBOOKS / "jupytext.toml").read_text())
    assert set(config["formats"].split(",")) == {"ipynb", TEXT_FORMAT}


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_text_source_and_ipynb_have_the_same_cells(source: Path) -> None:
    text = jupytext.read(source, fmt=TEXT_FORMAT)
    stored = jupytext.read(source.with_suffix(".ipynb"))
    assert cells(text) == cells(stored), (
        f"{source.name} and {source.stem}.ipynb disagree: run `python notebooks/build.py "
        f"{source.stem[:2]}` (or `jupytext --sync notebooks/{source.name}`)")


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_every_code_cell_has_its_outputs_stored(source: Path) -> None:
    stored = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    unrun = [i for i, cell in enumerate(stored.cells)
             if cell.cell_type == "code" and cell.get("execution_count") is None]
    assert not unrun, f"cells {unrun} of {source.stem}.ipynb were never run: build it"


def test_the_tutorial_steps_1_to_19_each_have_a_heading() -> None:
    text = "\n".join(path.read_text() for path in SOURCES)
    headings = re.findall(r"^#+ Steps? ([\d, and]+)·", text, flags=re.MULTILINE)
    numbers = sorted(int(n) for heading in headings for n in re.findall(r"\d+", heading))
    assert numbers == list(range(1, 20))
    assert "learn.microsoft.com/en-us/azure/healthcare-apis/dicom/dicomweb-standard-apis-curl" \
        in text


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_no_stored_output_shows_a_credential(source: Path) -> None:
    stored = (source.with_suffix(".ipynb")).read_text()
    for value in re.findall(r"Authorization: (?:Bearer|Basic) ([^\s'\"\\]+)", stored):
        assert value in ("***", "$DICOMWEB_TOKEN"), f"{source.stem} shows a credential"


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_a_notebook_that_makes_temporary_folders_removes_them_in_its_last_cell(
        source: Path) -> None:
    code = [cell.source for cell in jupytext.read(source, fmt=TEXT_FORMAT).cells
            if cell.cell_type == "code"]
    if any("teaching.write_samples()" in c or "teaching.temporary_folder()" in c for c in code):
        assert "teaching.cleanup()" in code[-1]
    assert "mkdtemp" not in "\n".join(code), "use teaching.temporary_folder(), which is cleaned"

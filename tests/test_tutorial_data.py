"""The vendored tutorial files (tests/data/tutorial) are complete, unchanged and licensed."""

from __future__ import annotations

import hashlib

from support import TUTORIAL_DATA, TUTORIAL_NAMES


def _sums() -> dict[str, str]:
    sums = {}
    for line in (TUTORIAL_DATA / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.lstrip("*")] = digest
    return sums


def test_every_vendored_file_has_its_recorded_sha256() -> None:
    sums = _sums()
    assert set(sums) == {*TUTORIAL_NAMES, "dicom-metadata.csv"}
    for name, digest in sums.items():
        actual = hashlib.sha256((TUTORIAL_DATA / name).read_bytes()).hexdigest()
        assert actual == digest, f"{name} differs from the tutorial's original"


def test_the_licence_notice_travels_with_the_files() -> None:
    notice = (TUTORIAL_DATA / "README.md").read_text()
    assert "microsoft/dicom-server" in notice
    assert "Copyright (c) Microsoft Corporation" in notice
    assert "MIT License" in notice

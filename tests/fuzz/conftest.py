"""Hypothesis keeps its caches (e.g. the Unicode character map) out of the repository."""

from __future__ import annotations

import tempfile

from hypothesis.configuration import set_hypothesis_home_dir

set_hypothesis_home_dir(tempfile.mkdtemp(prefix="dicomframes-hypothesis-"))

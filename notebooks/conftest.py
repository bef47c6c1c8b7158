"""Run the notebooks under nbval in a fresh archive of their own, on the embedded server.

The kernel that nbval starts for each notebook inherits this process's environment at the
moment it starts. Just before that (in the setup of a notebook's first cell) we point
``DICOMFRAMES_DATA`` at a temporary folder created once per test session, point ``TMPDIR``
(where the notebooks write their sample files) at a folder inside it, and drop
``DICOMWEB_URL`` / ``DICOMWEB_TOKEN``: the stored outputs were made on the embedded server, so
the comparison only means something there, and a test run must never touch the user's
``~/.cache/dicomframes/archive`` or remote server. The environment is restored afterwards, so
that the tests in tests/ never see these values.

To check that the notebooks also give the same outputs on an archive that earlier runs left
behind, set ``DICOMFRAMES_NBVAL_ARCHIVE`` to a folder: it is then used instead (and kept).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

_ARCHIVE: list[str] = []


def _scratch() -> str:
    """The session's temporary folder (removed at the end of the session)."""
    if not _ARCHIVE:
        _ARCHIVE.append(tempfile.mkdtemp(prefix="dicomframes-nbval-"))
    return _ARCHIVE[0]


def _archive() -> str:
    return os.environ.get("DICOMFRAMES_NBVAL_ARCHIVE") or _scratch()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    if not str(item.path).endswith(".ipynb"):
        yield
        return
    saved = {name: os.environ.get(name)
             for name in ("DICOMFRAMES_DATA", "DICOMWEB_URL", "DICOMWEB_TOKEN", "TMPDIR")}
    os.environ["DICOMFRAMES_DATA"] = os.path.join(_archive(), "archive")
    # The notebooks remove their temporary folders in their last cell; a notebook that fails
    # before it leaves them here, removed with the rest at the end of the session.
    kernel_tmp = os.path.join(_scratch(), "tmp")
    os.makedirs(kernel_tmp, exist_ok=True)
    os.environ["TMPDIR"] = kernel_tmp
    os.environ.pop("DICOMWEB_URL", None)
    os.environ.pop("DICOMWEB_TOKEN", None)
    try:
        yield                      # nbval starts the notebook's kernel here
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _ARCHIVE:
        shutil.rmtree(_ARCHIVE.pop(), ignore_errors=True)

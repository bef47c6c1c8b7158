"""Request bodies read from files, and the files a body is made of (for ``Exchange.curl``).

A body given as a path is sent as the file's bytes; the STOW encoder's body names its files in
``curl_files``. Knowing the files lets the recorded exchange print a ``curl`` command that
sends the same files (``--data-binary @PATH`` or ``--form "file1=@PATH;type=..."``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["FileBody", "body_files"]


class FileBody:
    """A request body read from a file, chunk by chunk, each time it is sent (so a retry
    sends it again); its length gives the Content-Length header."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.size = os.path.getsize(path)

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        with open(self.path, "rb") as file:
            while chunk := file.read(1 << 20):
                yield chunk


def body_files(data: Any, headers: Mapping[str, str]) -> tuple[Any, list[tuple[str, str]], bool]:
    """The body to send and the files it is made of, for ``curl`` (see :class:`Exchange`):
    a path is sent as the file's bytes; a body with ``curl_files`` (the STOW encoder's) is a
    multipart form of those files."""
    if isinstance(data, os.PathLike):
        media = next((v for k, v in headers.items() if k.lower() == "content-type"),
                     "application/octet-stream")
        path = os.fspath(data)
        return FileBody(str(path)), [(str(path), media)], False
    files = getattr(data, "curl_files", None)
    if files:
        return data, list(files), True
    return data, [], False

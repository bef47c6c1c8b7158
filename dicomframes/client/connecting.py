"""``connect()``: the service's URL (given, from the environment, or the embedded server on
127.0.0.1) and a :class:`~dicomframes.client.facade.Client` for it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import requests

from .facade import Client
from .limits import DEFAULT_MAX_ANSWER_BYTES, DEFAULT_MAX_DECOMPRESSION_RATIO

__all__ = ["connect"]


def connect(
    url: str | None = None,
    *,
    token: Any = None,
    scopes: str | Sequence[str] = (),
    auth: Any = None,
    session: requests.Session | None = None,
    timeout: float | tuple[float, float] | None = 30.0,
    retries: int = 3,
    verify: bool | str = True,
    max_answer_bytes: int | None = DEFAULT_MAX_ANSWER_BYTES,
    max_decompression_ratio: float | None = DEFAULT_MAX_DECOMPRESSION_RATIO,
    backoff: float = 0.5,
    max_retry_wait: float = 60.0,
    page_size: int = 100,
    max_pages: int = 10_000,
    history_size: int = 20,
    progress: bool = True,
    deadline: float | None = 300.0,
    server: str = "thread",
) -> Client:
    """Connect to a DICOMweb service and return a :class:`Client`.

    ``url``: the service root (``https://host/dicom-web``, ``https://host/v2``). When None, the
    environment variable ``DICOMWEB_URL`` is used (with ``DICOMWEB_TOKEN`` as bearer token when
    no token is given); without it, the embedded server is started on demand on the folder
    ``DICOMFRAMES_DATA`` or ``~/.cache/dicomframes/archive`` and used (``server="process"``:
    in a child process).

    Authentication: ``token`` (bearer: a string, a function returning one, or a credential
    with ``get_token(*scopes)`` such as ``DefaultAzureCredential()``, refreshed before it
    expires and once after a 401; ``scopes``: e.g. ``client.AZURE_DICOM_SCOPE``; see
    :mod:`dicomframes.client.credentials`), ``auth`` (a ``(user, password)`` tuple for basic
    auth or any requests auth object), or ``session`` (a ready ``requests.Session`` such as
    Google's ``AuthorizedSession``). TLS certificates are verified unless ``verify=False``.
    ``timeout`` (seconds) applies to connecting and to each read; ``retries`` is the number of
    retries on 429/503 and on connection errors, for idempotent calls only (never POST).
    ``max_answer_bytes`` (512 MiB by default, None for no limit) is the most bytes of one
    answer, or of one part of a multipart answer, read into memory; ``max_decompression_ratio``
    (500 by default) the most a gzip or deflate answer may inflate once past 8 MiB. Past either,
    reading stops and the call raises :class:`dicomframes.AnswerTooLarge` naming the URL and
    the limit; so does a JSON answer too large for the memory the process may use.
    The others are :class:`Client`'s (``page_size``, ``max_pages``, ``backoff``,
    ``max_retry_wait``, ``history_size``, ``progress``, ``deadline``: the seconds one whole call
    may take, every page and retry of it, 300 by default, None for no limit; past it the call
    raises :class:`dicomframes.DeadlineExceeded`; ``client.time_limit(seconds)`` sets another
    for a block of calls).
    """
    if url is None:
        url = os.environ.get("DICOMWEB_URL") or None
        if url is not None:
            if token is None and auth is None and session is None:
                token = os.environ.get("DICOMWEB_TOKEN") or None
        else:
            from ..server import embedded  # the web server loads only when it is used

            url = embedded(server).url
    return Client(url, token=token, scopes=scopes, auth=auth, session=session, timeout=timeout,
                  retries=retries, verify=verify, max_answer_bytes=max_answer_bytes,
                  max_decompression_ratio=max_decompression_ratio, backoff=backoff,
                  max_retry_wait=max_retry_wait, page_size=page_size, max_pages=max_pages,
                  history_size=history_size, progress=progress, deadline=deadline)

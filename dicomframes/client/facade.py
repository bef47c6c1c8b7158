"""DICOMweb client: every call of the DICOMweb tutorial in one line, answers as pandas and numpy.

:func:`connect` returns a :class:`Client` bound to a base URL (the service root, e.g.
``https://example.org/dicom-web`` or ``.../v2``). The client makes the QIDO-RS / WADO-RS /
STOW-RS / DELETE calls; the HTTP side (authentication, timeouts, retries) is its
:class:`~dicomframes.client.transport.Transport`. Turning bodies into values is left to the
modules that own those concerns: :mod:`dicomframes.standard.multipart` (multipart/related),
:mod:`dicomframes.convert.tables` (DataFrames) and :mod:`dicomframes.convert.pixels`
(frames to numpy).

For teaching, every HTTP exchange is recorded: ``client.last_exchange`` and ``client.history``
hold :class:`Exchange` records (headers with credentials redacted, body summaries, multipart
parts), and ``with client.trace(): ...`` prints each exchange as it completes.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from io import BytesIO
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

import pydicom
import requests
from pydicom.errors import InvalidDicomError
from requests.auth import HTTPBasicAuth

from .. import errors
from ..convert import pixels, tables
from ..standard import multipart
from ..standard.attributes import LEVELS
from ..standard.mediatypes import DICOM, DICOM_JSON, OCTET_STREAM
from ..standard.paths import ResourcePath
from ..standard.uids import validate_uid
from .changefeed import ChangeFeedCalls
from .connections import new_session
from .credentials import BearerTokenAuth, provider_for
from .exchange import Exchange, Recorder, redact_url
from .failures import not_done
from .frames import fetch_frames, fetch_volume
from .harvest import HarvestSummary
from .harvest import harvest as harvest_archive
from .images import fetch_image
from .limits import DEFAULT_MAX_ANSWER_BYTES, DEFAULT_MAX_DECOMPRESSION_RATIO
from .metadata_cache import MetadataCache
from .qido import Pager, qido_params
from .store import store as store_items
from .transport import Transport

if TYPE_CHECKING:
    import numpy
    import pandas
    import xarray

__all__ = ["Client", "connect"]

# Table options accepted next to search filters and passed to tables.to_dataframe.
_TABLE_OPTIONS = ("raw", "split_multivalued", "flatten_sequences", "pn_components")


def _setting(name: str, doc: str) -> Any:
    """A Client attribute kept by its transport (read and written through)."""
    return property(lambda self: getattr(self.transport, name),
                    lambda self, value: setattr(self.transport, name, value), doc=doc)


class Client(ChangeFeedCalls):
    """A DICOMweb service at ``url``. Build it with :func:`connect`.

    Searches and metadata come back as pandas DataFrames, retrieves as pydicom Datasets,
    frames as numpy arrays. Errors raise :class:`dicomframes.DICOMwebError` subclasses carrying
    status, method, URL and the server's message (never a credential).

    Attributes: ``url`` (public base URL), ``timeout``, ``retries``, ``page_size`` (rows per
    QIDO page when paging), ``max_pages`` (hard cap on pages of one search), ``progress``
    (show a tqdm bar for searches of more than one page), ``history`` (last exchanges),
    ``capabilities`` (quirks learned from the server's answers, e.g. ``{"delete": False}``),
    ``deadline`` (seconds one whole call may take), ``max_answer_bytes`` and
    ``max_decompression_ratio`` (see :func:`connect`). An answer cut short, one that is not what
    was asked for, or a call past its deadline raises :class:`dicomframes.ResponseTruncated`,
    :class:`dicomframes.InvalidResponse` or :class:`dicomframes.DeadlineExceeded`: never
    partial or empty data.
    """

    def __init__(
        self,
        url: str,
        *,
        token: Any = None,
        scopes: str | Sequence[str] = (),
        auth: Any = None,
        session: requests.Session | None = None,
        timeout: float | tuple[float, float] | None = 30.0,
        retries: int = 3,
        verify: bool | str = True,
        backoff: float = 0.5,
        max_retry_wait: float = 60.0,
        page_size: int = 100,
        max_pages: int = 10_000,
        history_size: int = 20,
        progress: bool = True,
        deadline: float | None = 300.0,
        max_answer_bytes: int | None = DEFAULT_MAX_ANSWER_BYTES,
        max_decompression_ratio: float | None = DEFAULT_MAX_DECOMPRESSION_RATIO,
    ) -> None:
        parts = urlsplit(str(url).strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"a DICOMweb URL must start with http:// or https://, got {url!r}")
        if parts.query or parts.fragment:
            raise ValueError("the DICOMweb base URL must not carry a query or fragment")
        if token is not None and auth is not None:
            raise ValueError("give either token= or auth=, not both")
        netloc = parts.netloc
        if "@" in netloc:  # credentials in the URL become basic auth, never part of self.url
            userinfo, netloc = netloc.rsplit("@", 1)
            if auth is None and token is None:
                user, _, password = userinfo.partition(":")
                auth = HTTPBasicAuth(unquote(user), unquote(password))
        self.url: str = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self._token = None if token is None else provider_for(token, scopes)
        if self._token is not None:
            auth = BearerTokenAuth(self._token)
        elif isinstance(auth, tuple):
            auth = HTTPBasicAuth(*auth)
        self._auth = auth
        self._own_session = session is None
        if session is None:
            session = new_session()
            session.verify = verify
        secrets = [token] if isinstance(token, str) else []
        auth_password = getattr(auth, "password", None)
        if isinstance(auth_password, str) and auth_password:
            # "user:password" as sent in a Basic header (its base64 form) is always masked;
            # the password alone only when long enough not to mask ordinary words.
            secrets.append(f"{getattr(auth, 'username', '')}:{auth_password}")
            if len(auth_password) >= 4:
                secrets.append(auth_password)
        self._recorder = Recorder(history_size, secrets)
        if self._token is not None:  # each new token is scrubbed from what is recorded
            self._token.on_token = self._recorder.remember
        # With a caller's session its own verify setting applies unless we were told otherwise.
        self.transport = Transport(
            self.url, session, self._recorder, auth=auth,
            verify=None if (not self._own_session and verify is True) else verify,
            timeout=timeout, retries=max(0, int(retries)), backoff=backoff,
            max_retry_wait=max_retry_wait, deadline=deadline,
            max_answer_bytes=max_answer_bytes, max_decompression_ratio=max_decompression_ratio,
        )
        self.page_size = page_size
        self.max_pages = max_pages
        self.progress = progress
        #: pixel metadata of the series and instances read (see client.metadata_cache)
        self.metadata_cache = MetadataCache()

    session = _setting("session", "the requests.Session that carries every call")
    timeout = _setting("timeout", "seconds to connect and for each read (or a pair)")
    retries = _setting("retries", "retries of idempotent calls on 429/503 and broken connections")
    backoff = _setting("backoff", "seconds before the first retry, doubled each time")
    max_retry_wait = _setting("max_retry_wait", "the longest wait a Retry-After may impose")
    capabilities = _setting("capabilities", "quirks learned from the server's answers")
    deadline = _setting("deadline", "seconds a whole call may take (None: no limit)")
    max_answer_bytes = _setting("max_answer_bytes", "the most bytes of one answer (or one "
                                "part of a multipart answer) read into memory (None: no limit)")
    max_decompression_ratio = _setting("max_decompression_ratio", "the most a compressed "
                                       "answer may inflate (None: no limit)")

    @contextlib.contextmanager
    def time_limit(self, seconds: float | None) -> Iterator[Client]:
        """Give the calls made inside the ``with`` block (in this thread) ``seconds`` in all,
        instead of ``client.deadline`` each; past it they raise
        :class:`dicomframes.DeadlineExceeded`."""
        with self.transport.call(seconds):
            yield self

    @property
    def history(self) -> deque[Exchange]:
        """The last exchanges, oldest first."""
        return self._recorder.history

    # ---- basics -------------------------------------------------------------------------

    def __repr__(self) -> str:
        if self._token is not None:
            how = self._token.kind
        elif isinstance(self._auth, HTTPBasicAuth):
            how = "basic auth"
        elif self._auth is not None:
            how = type(self._auth).__name__
        elif not self._own_session:
            how = f"session {type(self.session).__name__}"
        else:
            how = "no auth"
        return f"<dicomframes.Client {self.url} ({how})>"

    __str__ = __repr__

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._own_session:
            self.session.close()

    def __getstate__(self) -> dict:
        raise TypeError("a dicomframes Client holds a live session and cannot be pickled")

    def __copy__(self) -> Client:
        return self  # a handle on a service: copies share it (pandas copies DataFrame.attrs)

    def __deepcopy__(self, memo: dict) -> Client:
        return self

    @property
    def last_exchange(self) -> Exchange | None:
        """The most recent :class:`Exchange` (None before the first request)."""
        return self.history[-1] if self.history else None

    @contextlib.contextmanager
    def trace(self, file: IO[str] | None = None) -> Iterator[Client]:
        """Print every HTTP exchange made inside the ``with`` block (to ``file`` or stdout).

        Each exchange is printed once it is complete (after a streamed body has been read) as
        a ``curl -v`` style transcript, credentials redacted.
        """
        with self._recorder.tracing(file):
            yield self

    # ---- low level ------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        stream: bool = False,
        summary: str | None = None,
    ) -> requests.Response:
        """Send one HTTP request to ``path`` (relative to ``url``, or an absolute URL).

        ``params`` become the query string; values keep DICOM wildcards (``*?^,``) raw and
        lists become comma-separated. ``summary`` describes a streamed body in the recorded
        :class:`Exchange` (e.g. ``"multipart/related, 3 parts, 8.6 MB"``). Idempotent methods
        (GET, HEAD, DELETE, OPTIONS, PUT) are retried on 429/503 (honouring Retry-After) and on
        connection errors; POST never is (a STOW could be stored twice). Returns the
        ``requests.Response`` for statuses below 400, else raises a
        :class:`dicomframes.DICOMwebError` subclass.
        """
        return self.transport.request(method, path, params=params, headers=headers, data=data,
                                      stream=stream, summary=summary)

    def iter_multipart(
        self,
        path: str,
        media: str = OCTET_STREAM,
        transfer_syntax: str | None = "*",
        params: Mapping[str, Any] | None = None,
    ) -> Iterator[tuple[multipart.Part, str | None]]:
        """Low level: GET ``path`` as multipart/related of ``media`` and yield each part as it
        arrives with its transfer syntax (its own, else the answer's, else None).

        ``transfer_syntax`` "*" takes what the server stores; a UID the server cannot send
        (406, Orthanc's 500) is asked again as "*" with a warning. A body cut short raises
        :class:`dicomframes.MultipartError`.
        """
        return self.transport.iter_multipart(path, media, transfer_syntax, params)

    # ---- QIDO-RS --------------------------------------------------------------------------

    def search_studies(self, **filters: Any) -> pandas.DataFrame:
        """Search studies (QIDO-RS ``GET /studies``); one row per study.

        Filters are DICOM attributes by keyword or tag (see :func:`qido_params` for values:
        wildcards ``*`` ``?``, dates and ``(start, end)`` ranges, lists of UIDs) plus
        ``limit`` (None, the default, fetches every page), ``offset``, ``includefield``
        (list or ``"all"``), ``fuzzymatching`` and the table options ``raw``,
        ``split_multivalued``, ``flatten_sequences``, ``pn_components``.
        """
        return self._search("study", "studies", filters)

    def search_series(self, study: str | None = None, **filters: Any) -> pandas.DataFrame:
        """Search series (``GET /series`` or ``/studies/{study}/series``); one row per series."""
        return self._search("series", ResourcePath(study).search("series"), filters)

    def search_instances(
        self, study: str | None = None, series: str | None = None, **filters: Any
    ) -> pandas.DataFrame:
        """Search instances (``GET /instances``, ``/studies/{s}/instances`` or
        ``/studies/{s}/series/{se}/instances``); one row per instance.

        A ``series`` without ``study`` becomes a ``SeriesInstanceUID`` filter on ``/instances``.
        """
        if study is None and series is not None:
            filters = {"SeriesInstanceUID": validate_uid(series, "SeriesInstanceUID"), **filters}
            series = None
        return self._search("instance", ResourcePath(study, series).search("instance"), filters)

    def search_json(self, level: str, path: str | None = None, **filters: Any) -> list[dict]:
        """The DICOM JSON objects of a search at ``level`` ("study", "series", "instance")."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {sorted(LEVELS)}, got {level!r}")
        return self._search_objects(level, path or ResourcePath().search(level), dict(filters))

    def _search(self, level: str, path: str, filters: dict[str, Any]) -> pandas.DataFrame:
        options = {k: filters.pop(k) for k in _TABLE_OPTIONS if k in filters}
        objs = self._search_objects(level, path, filters)
        return tables.to_dataframe(objs, level=level, client=self, **options)

    def _fetch_page(self, path: str, params: dict[str, str]) -> list[dict]:
        response = self.request("GET", path, params=params, headers={"Accept": DICOM_JSON})
        return self.transport.dicom_json(response)  # a lone object counts as an array of one

    def _search_objects(self, level: str, path: str, filters: dict[str, Any]) -> list[dict]:
        limit = filters.pop("limit", None)
        offset = int(filters.pop("offset", 0) or 0)
        params = qido_params(filters)
        pager = Pager(lambda page: self._fetch_page(path, page), level, self.page_size,
                      self.max_pages, self.progress, self.url, self.capabilities)
        with self.transport.call():  # one deadline for every page
            return pager.search(params, None if limit is None else int(limit), offset)

    # ---- WADO-RS metadata -------------------------------------------------------------------

    def metadata_json(
        self, study: str, series: str | None = None, instance: str | None = None
    ) -> list[dict]:
        """The DICOM JSON metadata (``.../metadata``): one object per instance, no pixels."""
        path = ResourcePath(study, series, instance).child("metadata")
        response = self.request("GET", path, headers={"Accept": DICOM_JSON})
        return self.transport.dicom_json(response)

    def metadata(
        self,
        study: str,
        series: str | None = None,
        instance: str | None = None,
        raw: bool = False,
        **options: Any,
    ) -> pandas.DataFrame:
        """Metadata of a study, series or instance as a DataFrame, one row per instance.

        ``options`` go to :func:`dicomframes.convert.tables.to_dataframe` (``split_multivalued``,
        ``flatten_sequences``, ``pn_components``).
        """
        objs = self.metadata_json(study, series, instance)
        return tables.to_dataframe(objs, level="instance", raw=raw, client=self, **options)

    # ---- WADO-RS retrieve ---------------------------------------------------------------------

    def retrieve(
        self,
        study: str,
        series: str | None = None,
        instance: str | None = None,
        transfer_syntax: str = "*",
    ) -> list[pydicom.Dataset]:
        """Retrieve a study, series or instance as pydicom Datasets (multipart, streamed)."""
        return list(self.iter_retrieve(study, series, instance, transfer_syntax))

    def iter_retrieve(
        self,
        study: str,
        series: str | None = None,
        instance: str | None = None,
        transfer_syntax: str = "*",
    ) -> Iterator[pydicom.Dataset]:
        """Yield the instances of a study, series or instance one by one as they arrive.

        ``transfer_syntax`` "*" (default) takes what the server stores; a UID asks the server
        to transcode. A server that cannot (406, or Orthanc's 500) is asked again with "*" and
        a warning names its answer. A body cut short raises :class:`MultipartError`.
        """
        path = str(ResourcePath(study, series, instance))
        for part, _ in self.iter_multipart(path, DICOM, transfer_syntax):
            try:
                yield pydicom.dcmread(BytesIO(part.content))
            except (InvalidDicomError, ValueError, EOFError, OSError, KeyError) as exc:
                raise errors.InvalidResponse(
                    "GET", redact_url(self.transport.url_for(path)),
                    f"a retrieved part is not a DICOM file ({type(exc).__name__}: {exc})",
                    part.content_type or "", self._recorder.scrub_bytes(bytes(part.content[:200])),
                ) from None

    # ---- frames, rendered, bulk data --------------------------------------------------------

    def frames(
        self,
        study: str,
        series: str,
        instance: str,
        frames: int | Sequence[int] | None = None,
        *,
        transfer_syntax: str | None = "*",
        convert_color: bool = False,
        out: numpy.ndarray | None = None,
    ) -> numpy.ndarray:
        """Pixel frames of an instance as a numpy array (WADO-RS ``.../frames/{list}``): the
        stored values, no rescale and no geometry (:meth:`image` gives those).

        ``frames`` is a 1-based frame number (-> one frame, shape ``(rows, columns[, samples])``),
        a list of them, or None for every frame (-> ``(n, rows, columns[, samples])``).
        ``transfer_syntax="*"`` (default) takes the stored syntax and decodes it here; a UID asks
        the server to transcode. Parts are decoded as they arrive into one preallocated array
        (``out`` if given); see :func:`dicomframes.client.frames.fetch_frames` for the fallbacks.
        """
        with self.transport.call():  # metadata and frames: one deadline
            return fetch_frames(self, study, series, instance, frames,
                                transfer_syntax=transfer_syntax, convert_color=convert_color,
                                out=out)

    def volume(self, study: str, series: str, **options: Any) -> numpy.ndarray:
        """Every frame of a series stacked in slice order, shape
        ``(frames, rows, columns[, samples])``, the stored values as they are (no rescale, no
        geometry: :meth:`image` gives those); ``options`` as in
        :func:`dicomframes.client.frames.fetch_volume` (``transfer_syntax``, ``workers``...).
        """
        with self.transport.call():  # metadata and every instance: one deadline
            return fetch_volume(self, study, series, **options)

    def image(self, study: str, series: str, *, instances: Sequence[str] | None = None,
              units: str = "modality", workers: int | None = None) -> xarray.DataArray:
        """A series (or ``instances`` of it) as a volume in physical units and patient space.

        Returns an ``xarray.DataArray`` with dims ``("z", "y", "x")`` (``"sample"`` last for
        colour), slices in order along the slice normal; coordinates in mm from the first
        voxel (``z`` the true slice positions, even when uneven); values in modality units
        (``units="modality"``: Rescale Slope/Intercept or the Modality LUT, per frame when
        given per frame; HU for CT; float32 unless nothing needs rescaling) or as stored
        (``units="stored"``). Attrs, all JSON values: ``spacing`` (x, y, z), ``origin`` (LPS),
        ``direction`` (9 numbers, row-major) and ``affine`` (16 numbers, row-major 4x4: voxel
        index x, y, z -> LPS mm) as SimpleITK gives them, ``Modality``, ``units``, UIDs and
        window. ``image.dicom`` exports it (NIfTI, SimpleITK). Bad geometry raises
        :class:`dicomframes.errors.GeometryError` or warns (IrregularSpacing, GantryTilt,
        MissingGeometry). See :func:`dicomframes.client.images.fetch_image`.
        """
        with self.transport.call():  # metadata and every instance: one deadline
            return fetch_image(self, study, series, instances=instances, units=units,
                               workers=workers)

    def rendered(
        self,
        study: str,
        series: str | None = None,
        instance: str | None = None,
        frame: int | None = None,
        media_type: str = "image/png",
    ) -> numpy.ndarray:
        """A server-rendered picture (WADO-RS ``.../rendered``) as a numpy array (Pillow)."""
        if frame is not None:
            if instance is None:
                raise ValueError("a frame needs its instance")
            if int(frame) < 1:
                raise ValueError(f"frame numbers start at 1, got {frame}")
        numbers = None if frame is None else (int(frame),)
        path = ResourcePath(study, series, instance, numbers).child("rendered")
        response = self.request("GET", path, headers={"Accept": media_type})
        try:
            return pixels.decode_rendered(response.content)
        except (OSError, ValueError, SyntaxError) as exc:  # Pillow: not an image it can read
            raise self.transport.invalid(response, f"not a picture ({exc})") from None

    def bulkdata(self, uri: str) -> bytes:
        """The bytes behind a ``BulkDataURI`` (absolute, or relative to the service URL).

        An absolute URI on another host is refused (credentials only go to ``client.url``'s
        host), unless it points under this service's path, where it is re-based.
        """
        target = uri
        if uri.startswith(("http://", "https://")):
            mine, theirs = urlsplit(self.url), urlsplit(uri)
            same = (theirs.scheme, theirs.netloc.lower()) == (mine.scheme, mine.netloc.lower())
            if not same:
                if mine.path and theirs.path.startswith(mine.path + "/"):
                    target = self.url + theirs.path[len(mine.path):] + (
                        f"?{theirs.query}" if theirs.query else ""
                    )
                else:
                    raise ValueError(
                        f"refusing to fetch bulk data from {theirs.scheme}://{theirs.netloc} "
                        f"with the credentials of {mine.scheme}://{mine.netloc}"
                    )
        chunks = [part.content for part, _ in self.iter_multipart(target, OCTET_STREAM, "*")]
        if not chunks:
            return b""
        return bytes(chunks[0]) if len(chunks) == 1 else b"".join(bytes(c) for c in chunks)

    # ---- STOW-RS and DELETE -----------------------------------------------------------------

    def harvest(self, path: str | os.PathLike[str], level: str = "instances",
                metadata: bool = False, **options: Any) -> HarvestSummary:
        """The archive (what ``options``' filters select) at ``level`` as Parquet in ``path``;
        resumable; ``update=True`` applies the changes since (:func:`.harvest.harvest`)."""
        return harvest_archive(self, path, level, metadata, **options)

    def store(self, items: Any, study: str | None = None, **options: Any) -> pandas.DataFrame:
        """Store files, folders or pydicom Datasets (STOW-RS); a DataFrame of outcomes.

        See :func:`dicomframes.client.store.store` for the options (batching, parallel requests,
        progress, resume).
        """
        try:
            return store_items(self, items, study=study, **options)
        finally:
            self.metadata_cache.forget()  # a series may have grown, an instance changed

    def delete(
        self, study: str, series: str | None = None, instance: str | None = None
    ) -> None:
        """Delete a study, series or instance (``DELETE``; not in the DICOM standard).

        A server without DICOMweb DELETE (Orthanc answers 405) raises
        :class:`dicomframes.MethodNotAllowed` saying so; a missing item raises NotFound.
        Success is only 200, 202 or 204 without a web page: a redirect (e.g. to a login page),
        an HTML page or another status raises :class:`dicomframes.InvalidResponse` saying what
        came back.
        """
        path = str(ResourcePath(study, series, instance))
        self.metadata_cache.forget(study, series, instance)
        try:
            response = self.request("DELETE", path)
        except errors.MethodNotAllowed as exc:
            self.capabilities["delete"] = False
            allow = exc.headers.get("Allow") or exc.headers.get("allow")
            said = f"; it said: {exc.message}" if exc.message else ""
            raise errors.MethodNotAllowed(
                exc.status,
                exc.method,
                exc.url,
                "the server does not offer DICOMweb DELETE (405 Method Not Allowed"
                + (f", Allow: {allow}" if allow else "") + ")" + said
                + "; delete through the server's own API instead",
                exc.headers,
            ) from None
        why = not_done(response.status_code, response.headers, response.content)
        if why is not None:
            raise self.transport.invalid(response, why)
        self.capabilities["delete"] = True


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
    server: str = "thread",
    **options: Any,
) -> Client:
    """Connect to a DICOMweb service and return a :class:`Client`.

    ``url``: the service root (``https://host/dicom-web``). None: ``DICOMWEB_URL`` (with
    ``DICOMWEB_TOKEN`` unless a token is given), else the embedded server on ``DICOMFRAMES_DATA``
    or ``~/.cache/dicomframes/archive``, started here (``server="process"``: in a child process).

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
    Other keyword ``options`` go to :class:`Client` (``page_size``, ``max_pages``,
    ``backoff``, ``history_size``, ``progress``, ``deadline``: the seconds one whole call
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
                  max_decompression_ratio=max_decompression_ratio, **options)

"""Reading a server's change feed (the Azure DICOM service model, see
:mod:`dicomframes.standard.changefeed`): ``client.changefeed()`` and
``client.changefeed_latest()``.

The window is pinned first: ``GET changefeed/latest`` gives the last Sequence, and entries
after it (written while the window is read) are left for the next read. Paging follows the
API version of the client's URL (``.../v1``: v1, else v2):

* v1: ``offset`` is the Sequence to start after, ``limit`` (100) a span of Sequences;
* v2: ``offset`` counts entries of the window to skip, ``limit`` 200; a start given as a
  Sequence is found by bisecting the feed with one-entry pages (one request on a feed
  without gaps in its Sequences, about log2(Sequence) on one with gaps), since v2 has no
  "after this Sequence" parameter.

The pages of a window are independent once its bounds are known (v1: Sequence spans; v2: at
most ``until - after`` entries from the first one), so up to four are asked at once.

A server without a feed raises :class:`dicomframes.errors.ChangeFeedUnavailable`.
"""

from __future__ import annotations

import datetime as _dt
import json
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from itertools import islice
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from ..convert.tables import to_dataframe
from ..errors import ChangeFeedUnavailable, DICOMwebError
from ..standard.changefeed import ACTIONS, STATES, paging_of, parse_timestamp, version_of_path
from .surface import DicomwebClient

__all__ = ["ChangeFeedCalls", "FeedReader", "Moment", "changefeed", "changefeed_latest",
           "entries_frame"]

#: A bound of a window: a Sequence (int) or a time (datetime, or ISO 8601 text).
Moment = int | _dt.datetime | str | None
_UIDS = ("StudyInstanceUid", "SeriesInstanceUid", "SopInstanceUid")
PARALLEL = 4  # pages of the feed asked at once


def _time_text(moment: _dt.datetime | str) -> str:
    value = parse_timestamp(moment) if isinstance(moment, str) else moment
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.UTC)
    return value.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FeedReader:
    """Reads one server's change feed and counts its requests (``requests``)."""

    def __init__(self, client: DicomwebClient) -> None:
        self.client = client
        self.rules = paging_of(version_of_path(urlsplit(client.url).path))
        self.requests = 0
        self._lock = threading.Lock()

    def _get(self, path: str, params: dict[str, str]) -> Any:
        with self._lock:
            self.requests += 1
        try:
            response = self.client.request("GET", path, params=params,
                                           headers={"Accept": "application/json"})
        except DICOMwebError as exc:
            if exc.status in (404, 405, 501):
                raise ChangeFeedUnavailable(self.client.url, exc.status) from None
            raise
        if response.status_code == 204 or not response.content.strip():
            return None
        try:
            return json.loads(response.content)
        except ValueError:
            raise ChangeFeedUnavailable(self.client.url, None, "the answer is not JSON") \
                from None

    def latest(self, include_metadata: bool = False) -> dict[str, Any] | None:
        """The last entry (None when the feed is empty)."""
        entry = self._get("changefeed/latest",
                          {"includeMetadata": str(include_metadata).lower()})
        if entry is not None and (not isinstance(entry, dict) or "Sequence" not in entry):
            raise ChangeFeedUnavailable(self.client.url, None, "no Sequence in the answer")
        return entry

    def page(self, offset: int, limit: int, include_metadata: bool,
             window: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """One ``GET changefeed`` page."""
        params = {"offset": str(offset), "limit": str(limit),
                  "includeMetadata": str(include_metadata).lower(), **(window or {})}
        entries = self._get("changefeed", params)
        if entries is None:
            return []
        if not isinstance(entries, list):
            raise ChangeFeedUnavailable(self.client.url, None, "the answer is not an array")
        return entries

    def _index_after(self, sequence: int) -> int:
        """v2: how many entries have a Sequence up to ``sequence`` (entry i has a Sequence
        of at least i + 1: Sequences are positive and increasing)."""
        if sequence <= 0:
            return 0

        def seq_at(index: int) -> int | None:
            found = self.page(index, 1, False)
            return int(found[0]["Sequence"]) if found else None

        probe = seq_at(sequence - 1)
        if probe is not None and probe <= sequence:
            return sequence  # no gaps below: entry ``sequence - 1`` is Sequence ``sequence``
        low, high = 0, sequence - 1  # the answer is in [low, high]
        while low < high:
            middle = (low + high) // 2
            value = seq_at(middle)
            if value is not None and value <= sequence:
                low = middle + 1
            else:
                high = middle
        return low

    def entries(self, after: int = 0, until: int | None = None,
                start: _dt.datetime | str | None = None,
                end: _dt.datetime | str | None = None, include_metadata: bool = False,
                bar: Any = None) -> Iterator[list[dict[str, Any]]]:
        """Pages of the entries with ``after`` < Sequence <= ``until`` (None: the latest
        entry now) and ``start`` <= Timestamp < ``end``."""
        if until is None:
            last = self.latest()
            until = int(last["Sequence"]) if last else 0
        if until <= after:
            return
        window = {}
        if start is not None:
            window["startTime"] = _time_text(start)
        if end is not None:
            window["endTime"] = _time_text(end)
        if window and not self.rules.windows:
            raise ValueError("time windows need API v2 of the change feed; connect to the "
                             "server's /v2 URL")
        limit = self.rules.max_limit
        calls: list[Callable[[], list[dict[str, Any]]]] | None
        if self.rules.offset_is_sequence:  # v1: Sequence spans, independent of each other
            calls = [partial(self.page, offset, min(limit, until - offset), include_metadata)
                     for offset in range(after, until, limit)]
        elif window and after:  # a window and a Sequence: the window's entries, in turn
            calls = None
        else:  # v2: the window holds at most ``until - after`` entries from ``skip`` on
            skip = 0 if window else self._index_after(after)
            calls = [partial(self.page, offset, limit, include_metadata, window)
                     for offset in range(skip, skip + until - after, limit)]
        done = after
        for raw in self._pages(calls, limit, include_metadata, window):
            page = [e for e in raw if after < int(e["Sequence"]) <= until]
            if page and bar is not None:
                reached = max(int(e["Sequence"]) for e in page)
                bar.update(max(0, reached - done))
                done = max(done, reached)
            if page:
                yield page
            if not self.rules.offset_is_sequence and (
                    len(raw) < limit or (raw and int(raw[-1]["Sequence"]) >= until)):
                return
        if bar is not None:
            bar.update(max(0, until - done))

    def _pages(self, calls: list[Callable[[], list[dict[str, Any]]]] | None, limit: int,
               include_metadata: bool, window: dict[str, str]
               ) -> Iterator[list[dict[str, Any]]]:
        """The answers of ``calls`` in order, up to ``PARALLEL`` requests in flight (the
        pages are independent: their offsets are known); ``None``: pages of ``window`` one
        after the other until a short one."""
        if calls is None:
            skip = 0
            while True:
                raw = self.page(skip, limit, include_metadata, window)
                skip += len(raw)
                yield raw
                if len(raw) < limit:
                    return
        with ThreadPoolExecutor(PARALLEL, thread_name_prefix="dicomframes-feed") as pool:
            queue = iter(calls)
            flight: deque[Future[list[dict[str, Any]]]] = deque(
                pool.submit(call) for call in islice(queue, PARALLEL))
            try:
                while flight:
                    raw = flight.popleft().result()
                    following = next(queue, None)
                    if following is not None:
                        flight.append(pool.submit(following))
                    yield raw
            finally:
                for future in flight:
                    future.cancel()


def entries_frame(entries: list[dict[str, Any]], include_metadata: bool = False
                  ) -> pd.DataFrame:
    """Feed entries as a typed DataFrame: Sequence (Int64), the three UIDs (string), Action
    and State (categorical), Timestamp (datetime, UTC); with ``include_metadata`` the
    metadata's columns follow, typed as ``client.metadata()`` types them (NA for entries
    that carry none: the instance is no longer current)."""
    frame = pd.DataFrame({
        "Sequence": pd.array([int(e["Sequence"]) for e in entries], dtype="Int64"),
        **{uid: pd.array([e.get(uid) for e in entries], dtype="string") for uid in _UIDS},
        "Action": pd.Categorical([e.get("Action") for e in entries], categories=ACTIONS),
        "Timestamp": pd.to_datetime([e.get("Timestamp") for e in entries], utc=True,
                                    format="ISO8601"),
        "State": pd.Categorical([e.get("State") for e in entries], categories=STATES),
    })
    if not include_metadata:
        return frame
    has = [i for i, e in enumerate(entries) if isinstance(e.get("Metadata"), dict)]
    meta = to_dataframe([entries[i]["Metadata"] for i in has], level="instance")
    meta.index = pd.Index(has)
    meta = meta.reindex(range(len(entries)))
    return pd.concat([frame, meta.reset_index(drop=True)], axis=1)


def changefeed(client: DicomwebClient, start: Moment = None, end: Moment = None, *,
               include_metadata: bool = False, progress: bool = True) -> pd.DataFrame:
    """The change feed's entries from ``start`` to ``end`` as a typed DataFrame
    (:func:`entries_frame`).

    A bound is a Sequence (``start`` exclusive, ``end`` inclusive: ``start=120`` reads what
    happened after entry 120) or a time (datetime or ISO 8601 text; ``start`` inclusive,
    ``end`` exclusive, API v2). None: the start of the feed, and its latest entry when the
    read begins. ``progress`` shows a tqdm bar. Raises :class:`ChangeFeedUnavailable` for a
    server without a feed.
    """
    reader = FeedReader(client)
    after = start if isinstance(start, int) else 0
    last = reader.latest()
    until = int(last["Sequence"]) if last else 0
    if isinstance(end, int):
        until = min(until, end)
    start_time = None if isinstance(start, int) else start
    end_time = None if isinstance(end, int) else end
    bar = None
    if progress and until > after:
        from tqdm.auto import tqdm

        bar = tqdm(total=until - after, unit=" entries", desc="change feed", leave=False)
    entries: list[dict[str, Any]] = []
    try:
        for page in reader.entries(after, until, start_time, end_time, include_metadata, bar):
            entries.extend(page)
    finally:
        if bar is not None:
            bar.close()
    return entries_frame(entries, include_metadata)


def changefeed_latest(client: DicomwebClient, *, include_metadata: bool = False
                      ) -> dict[str, Any] | None:
    """The feed's latest entry as the server sent it (a dict; None when the feed is empty).
    Raises :class:`ChangeFeedUnavailable` for a server without a feed."""
    return FeedReader(client).latest(include_metadata)


class ChangeFeedCalls:
    """The change feed calls of :class:`~dicomframes.client.Client` (a base class of it)."""

    def changefeed(self: DicomwebClient, start: Moment = None, end: Moment = None, *,
                   include_metadata: bool = False, progress: bool | None = None
                   ) -> pd.DataFrame:
        """The server's change feed (the Azure DICOM service model) from ``start`` to ``end``
        as a typed DataFrame, one row per create/update/delete event. Bounds are Sequences
        (start exclusive, end inclusive) or times (datetime or ISO 8601; API v2); see
        :func:`dicomframes.client.changefeed.changefeed`. A server without a feed raises
        :class:`dicomframes.ChangeFeedUnavailable`."""
        shown = bool(getattr(self, "progress", True)) if progress is None else progress
        return changefeed(self, start, end, include_metadata=include_metadata, progress=shown)

    def changefeed_latest(self: DicomwebClient, *, include_metadata: bool = False
                          ) -> dict[str, Any] | None:
        """The change feed's latest entry (a dict as sent; None when the feed is empty)."""
        return changefeed_latest(self, include_metadata=include_metadata)

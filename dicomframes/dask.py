"""Dask collections over a DICOMweb service, fetched by the workers (``pip install
dicomframes[dask]``).

- :func:`read_dicomweb` -- a Dask DataFrame of the studies, series or instances matching some
  QIDO-RS filters, one partition per planned part of the archive
  (:func:`dicomframes.client.harvest.plan_partitions`);
- :func:`read_metadata` -- the same for the full WADO-RS metadata of every instance;
- :func:`series_array` -- a lazy ``dask.array`` of a series' frames in slice order, one chunk per
  instance, so that a volume larger than memory can be reduced on a cluster;
- :func:`series_image` -- ``client.image`` as a lazy DataArray: the same coordinates, attrs and
  modality values, backed by a dask array in chunks of several slices.

Only the plan (a few QIDO requests, or one metadata request for a series) is made here; every
partition and chunk is fetched by the worker that computes it, with its own client built from
a :class:`Connection`: the URL and credentials in a small picklable object whose ``repr`` and
``str`` hide the credentials and which takes no part in naming the tasks. Task names are
``dicomweb-<level>-<hash>``, ``dicomweb-series-<hash>`` and ``dicomweb-image-<hash>``, the
hash taken over the URL, the filters and the plan, never a secret.

Any Dask scheduler runs these collections: the default one (threads), or a distributed cluster
once a ``distributed.Client`` is connected to it (``Client(LocalCluster(...))`` or
``Client("tcp://scheduler:8786")``). The workers must be able to reach the service's URL
themselves: ``127.0.0.1`` only works with workers on this machine.
"""

from __future__ import annotations

import bisect
import hashlib
import pickle
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
from dask.base import tokenize
from requests.auth import HTTPBasicAuth

from . import errors
from .client import Client
from .client.changefeed import FeedReader
from .client.credentials import TokenProvider, check_picklable, provider_for
from .client.frames import series_info, slice_order
from .client.harvest import fetch_partition
from .client.images import ImagePlan, fill_slices, image_array, plan_image
from .client.partitions import Partition, plan_partitions
from .convert.arrow import empty_frame, schema_for, unify
from .standard.attributes import PLURAL, level_name
from .standard.paths import ResourcePath

if TYPE_CHECKING:
    import pandas
    import xarray

__all__ = ["Connection", "RowsMissing", "SeriesFrames", "read_dicomweb", "read_metadata",
           "series_array", "series_image"]

#: Bytes of output per chunk of :func:`series_image` (several slices, never one per task).
IMAGE_CHUNK_BYTES = 32 * 2**20

#: Clients kept per worker process (one per distinct connection), the oldest closed first.
_MAX_CLIENTS = 8
class Connection:
    """How a worker reaches the service: URL, credentials and HTTP settings, picklable.

    ``repr`` and ``str`` name the URL and the kind of credentials only, and Dask tokenises a
    Connection by its URL and settings (``__dask_tokenize__``), so the secret appears in no
    task name, log line or graph repr. A user and password in the URL
    (``https://user:pw@host/...``) become basic auth and leave the URL.
    """

    __slots__ = ("_secret", "timeout", "url", "verify")

    def __init__(self, url: str, *, token: Any = None, auth: Any = None,
                 verify: bool | str = True,
                 timeout: float | tuple[float, float] | None = 30.0,
                 scopes: str | Sequence[str] = ()) -> None:
        if token is not None and auth is not None:
            raise ValueError("give either token= or auth=, not both")
        if token is not None and not isinstance(token, str):
            # a token function or credential: each worker asks it for its own tokens
            token = provider_for(token, scopes)
            check_picklable(token.source, "the token function or credential")
        parts = urlsplit(str(url).strip())
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, netloc = netloc.rsplit("@", 1)
            if token is None and auth is None:
                user, _, password = userinfo.partition(":")
                auth = (unquote(user), unquote(password))
        if isinstance(auth, HTTPBasicAuth):
            auth = (auth.username, auth.password)
        elif auth is not None and not isinstance(auth, tuple):
            try:
                pickle.dumps(auth)
            except Exception as exc:
                raise TypeError(f"the workers need a picklable auth object; "
                                f"{type(auth).__name__} cannot be pickled ({exc})") from None
        self.url: str = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"),
                                    parts.query, parts.fragment))
        self.verify = verify
        self.timeout = timeout
        self._secret: tuple[str, Any] | None = (
            ("token", token) if token is not None else ("auth", auth) if auth is not None
            else None)

    @property
    def credentials(self) -> str:
        """The kind of credentials held: "bearer token", "basic auth", an auth class name or
        "no credentials" (never the secret itself)."""
        if self._secret is None:
            return "no credentials"
        kind, value = self._secret
        if kind == "token":
            return value.kind if isinstance(value, TokenProvider) else "bearer token"
        return "basic auth" if isinstance(value, tuple) else type(value).__name__

    def __repr__(self) -> str:
        return f"Connection({self.url!r}, {self.credentials})"

    __str__ = __repr__

    def __dask_tokenize__(self) -> tuple:
        return ("dicomframes.dask.Connection", self.url, str(self.verify), str(self.timeout))

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)

    def identity(self) -> str:
        """A digest of everything, secret included, that tells connections apart in one
        process (kept in memory only, to share one client between tasks)."""
        secret: Any = self._secret
        if secret is not None and isinstance(secret[1], TokenProvider):
            secret = ("token", id(secret[1]))  # the same provider object: the same client
        return hashlib.sha256(pickle.dumps(
            (self.url, self.verify, self.timeout, secret))).hexdigest()

    def client(self, **options: Any) -> Client:
        """A new :class:`~dicomframes.client.Client` for this service (``options`` go to it)."""
        token = auth = None
        if self._secret is not None:
            kind, value = self._secret
            token, auth = (value, None) if kind == "token" else (None, value)
        return Client(self.url, token=token, auth=auth, verify=self.verify,
                      timeout=self.timeout, **options)


_clients: OrderedDict[str, Client] = OrderedDict()
_clients_lock = threading.Lock()


def worker_client(connection: Connection) -> Client:
    """This process's client for ``connection``, made on first use and then shared by the
    tasks that run here (so that its connections and cached pixel metadata are reused)."""
    key = connection.identity()
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = connection.client(progress=False, history_size=4)
        _clients.move_to_end(key)
        while len(_clients) > _MAX_CLIENTS:
            _, oldest = _clients.popitem(last=False)
            oldest.close()
        return client


# ---- DataFrames ------------------------------------------------------------------------------


def load_partition(partition: Partition, connection: Connection, level: str, metadata: bool,
                   schema: Any, pinned: int | None = None) -> pandas.DataFrame:
    """One partition with exactly the columns of ``schema``, fetched where this runs (a Dask
    worker): the task of :func:`read_dicomweb` and :func:`read_metadata`.

    ``pinned``: the change feed's Sequence the read was planned at; after the fetch, the feed's
    entries since then are read, and those about this partition's studies are reported in an
    :class:`~dicomframes.errors.ArchiveChanged` warning (how many, by action)."""
    client = worker_client(connection)
    frame = fetch_partition(client, partition, level=level, metadata=metadata, schema=schema)
    _check_planned(partition, frame, connection)
    if pinned is not None:
        report_changes(client, partition, pinned)
    return frame


def report_changes(client: Client, partition: Partition, pinned: int) -> int:
    """Warn (:class:`~dicomframes.errors.ArchiveChanged`) when the feed has entries after
    ``pinned`` about ``partition``'s studies; how many it has."""
    studies = set(partition.study_uids)
    actions: dict[str, int] = {}
    for page in FeedReader(client).entries(pinned):
        for entry in page:
            if entry.get("StudyInstanceUid") in studies:
                action = str(entry.get("Action"))
                actions[action] = actions.get(action, 0) + 1
    total = sum(actions.values())
    if total:
        said = ", ".join(f"{n} {action}" for action, n in sorted(actions.items()))
        warnings.warn(errors.ArchiveChanged(
            f"partition {partition.key} ({len(studies)} studies): {total} changes after "
            f"Sequence {pinned} ({said}); its rows may show the archive after that point"),
            stacklevel=2)
    return total


class RowsMissing(UserWarning):
    """A partition has fewer studies or rows than planned: some were deleted (or changed)
    between planning the collection and computing it."""


def _check_planned(partition: Partition, frame: pandas.DataFrame,
                   connection: Connection) -> None:
    """Warn (on the client too, from a distributed worker) when planned studies or rows are
    missing from a computed partition."""
    found = (set(frame["StudyInstanceUID"].dropna().astype(str))
             if "StudyInstanceUID" in frame.columns else set())
    # With filters a planned study may hold no matching row at all (a study without CT series
    # in a read of Modality=CT series), so only an unfiltered read can tell a study is gone.
    filtered = any(key != "includefield" for key, _ in partition.params)
    gone = [] if filtered else [uid for uid in partition.study_uids if uid not in found]
    short = not filtered and partition.rows is not None and len(frame) < partition.rows
    if not gone and not short:
        return
    planned = f"{partition.rows} rows" if partition.rows is not None else "rows"
    message = (f"{connection.url}: partition {partition.key} has {len(frame)} of {planned} "
               f"planned; {len(gone)} of {len(partition.study_uids)} studies are gone since "
               "the collection was planned (deleted meanwhile?); plan again for a consistent "
               "read")
    try:
        from distributed import warn
    except ImportError:  # pragma: no cover - distributed is part of the dask extra
        import warnings

        warnings.warn(message, RowsMissing, stacklevel=3)
        return
    warn(message, RowsMissing)


def _sample(partitions: Sequence[Partition], studies: int) -> Partition | None:
    """A partition of up to ``studies`` studies spread over the plan, fetched as the planned
    ones are (to learn the columns the server sends)."""
    pairs = [(uid, partition.counts[i] if i < len(partition.counts) else None)
             for partition in partitions for i, uid in enumerate(partition.study_uids)]
    if not pairs or studies < 1:
        return None
    picked = dict(pairs[::max(1, len(pairs) // studies)][:studies])
    counts = tuple(picked.values())
    rows = None if any(n is None for n in counts) else sum(n or 0 for n in counts)
    return Partition("sample", tuple(picked), rows, counts if rows is not None else (),
                     partitions[0].params)


def _frame(level: str, metadata: bool, connection: Connection,
           columns: Sequence[str] | None, sample_studies: int, rows_per_partition: int,
           filters: dict[str, Any], pin: bool | int = False) -> dd.DataFrame:
    includefield = filters.get("includefield")
    if metadata:
        includefield = list(columns or [])
    elif columns:
        given = [includefield] if isinstance(includefield, str) else list(includefield or [])
        includefield = [*given, *columns]
        filters = {**filters, "includefield": includefield}
    schema = schema_for(level, metadata, includefield=includefield,
                        filters=[k for k in filters if k != "includefield"])
    with connection.client(progress=False) as client:
        pinned = _pinned(client, pin)
        partitions = list(plan_partitions(client, level=level, metadata=metadata,
                                          rows_per_partition=rows_per_partition, **filters))
        sample = _sample(partitions, sample_studies)
        if sample is not None:  # attributes beyond the planned ones that the server sends
            schema = unify(schema, fetch_partition(client, sample, level=level,
                                                   metadata=metadata))
    meta = empty_frame(level, metadata=metadata, schema=schema)
    # Text columns keep the dtypes dicomframes gives them (as search_* and harvest do), rather
    # than Dask's conversion of object columns to pyarrow strings.
    with dask.config.set({"dataframe.convert-string": False}):
        if not partitions:
            return dd.from_pandas(meta, npartitions=1)
        label = "dicomweb-metadata" if metadata else f"dicomweb-{PLURAL[level_name(level)]}"
        return dd.from_map(load_partition, partitions,
                           args=(connection, level, metadata, schema, pinned),
                           meta=meta, label=label, enforce_metadata=False)


def _pinned(client: Client, pin: bool | int) -> int | None:
    """The Sequence a read is pinned to: ``pin`` itself, or the feed's latest for True."""
    if pin is False or pin is None:
        return None
    if pin is not True:
        return int(pin)
    latest = client.changefeed_latest()
    return int(latest["Sequence"]) if latest else 0


def read_dicomweb(url: str, level: str = "instances", *, token: Any = None,
                  scopes: str | Sequence[str] = (), auth: Any = None, verify: bool | str = True,
                  timeout: float | tuple[float, float] | None = 30.0,
                  columns: Sequence[str] | None = None, sample_studies: int = 4,
                  rows_per_partition: int = 5000, pin: bool | int = False,
                  **filters: Any) -> dd.DataFrame:
    """A Dask DataFrame of the ``level`` ("studies", "series" or "instances") rows matching
    ``filters`` (QIDO-RS filters as for ``client.search_*``, ``includefield`` included),
    fetched by the workers.

    The archive is split here into partitions of whole studies of about
    ``rows_per_partition`` rows (by StudyDate ranges, see
    :func:`dicomframes.client.harvest.plan_partitions`); each becomes one Dask partition that
    a worker fetches with its own client. Every partition has the same columns and dtypes (the
    ``meta``), typed as ``client.search_*`` types them: the attributes a search at that level
    returns, those of the filters, ``includefield`` and ``columns`` (keywords), and any other
    the server sends for ``sample_studies`` studies fetched here to learn them; other columns
    a worker meets are left out.

    ``token`` (bearer: a string, or a picklable zero-argument token function or credential
    with ``get_token(*scopes)``, each worker then asking it for fresh tokens; one that does not
    pickle raises TypeError here) or ``auth`` (a ``(user, password)`` tuple or a picklable
    requests auth object) travel to the workers inside a :class:`Connection`, never printed.
    Rows planned here that a worker no longer finds (studies deleted meanwhile) give a
    :class:`RowsMissing` warning with the counts.

    ``pin=True`` pins the read to the archive state it is planned at (the change feed's latest
    Sequence; an int pins to that Sequence): each partition, once fetched, reads the feed's
    entries since then and warns (:class:`~dicomframes.errors.ArchiveChanged`, with counts by
    action) when its studies changed, rather than silently mixing states. A server without a
    change feed raises :class:`~dicomframes.errors.ChangeFeedUnavailable`.
    """
    connection = Connection(url, token=token, auth=auth, verify=verify, timeout=timeout,
                            scopes=scopes)
    return _frame(level, False, connection, columns, sample_studies, rows_per_partition,
                  filters, pin)


def read_metadata(url: str, *, token: Any = None, scopes: str | Sequence[str] = (),
                  auth: Any = None, verify: bool | str = True,
                  timeout: float | tuple[float, float] | None = 30.0,
                  columns: Sequence[str] | None = None, sample_studies: int = 4,
                  rows_per_partition: int = 5000, pin: bool | int = False,
                  **filters: Any) -> dd.DataFrame:
    """A Dask DataFrame of the full WADO-RS metadata of every instance matching ``filters``,
    one row per instance, partitioned and fetched by the workers as :func:`read_dicomweb`.

    Columns: the usual attributes of every level, ``columns`` (keywords) and every attribute
    found in the metadata of ``sample_studies`` studies spread over the archive, fetched here
    to learn them; name in ``columns`` any attribute that only rare studies hold.
    ``pin``: as for :func:`read_dicomweb`.
    """
    connection = Connection(url, token=token, auth=auth, verify=verify, timeout=timeout,
                            scopes=scopes)
    return _frame("instances", True, connection, columns, sample_studies,
                  rows_per_partition, filters, pin)


# ---- arrays ----------------------------------------------------------------------------------


class SeriesFrames:
    """The frames of a series in slice order as a sliceable source for ``dask.array``:
    ``source[i:j, ...]`` fetches frames ``i`` to ``j`` (through the client's ``frames()``)
    where it is evaluated. Picklable; holds a :class:`Connection`, never shows its secret."""

    def __init__(self, connection: Connection, study: str, series: str,
                 instances: Sequence[str], counts: Sequence[int],
                 frame_shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.connection = connection
        self.study = study
        self.series = series
        self.instances = tuple(instances)
        self.counts = tuple(int(c) for c in counts)
        self.starts = tuple(int(s) for s in np.cumsum((0, *self.counts))[:-1])
        self.dtype = np.dtype(dtype)
        self.shape = (sum(self.counts), *frame_shape)
        self.ndim = len(self.shape)

    def __repr__(self) -> str:
        return (f"SeriesFrames({self.series}, {len(self.instances)} instances, "
                f"shape={self.shape}, {self.connection!r})")

    __str__ = __repr__

    def __len__(self) -> int:
        return self.shape[0]

    def __dask_tokenize__(self) -> tuple:
        return ("dicomframes.dask.SeriesFrames", self.connection.__dask_tokenize__(),
                self.study, self.series, self.instances, self.counts)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        first = key[0] if key else slice(None)
        rest = key[1:]
        positions = range(self.shape[0])
        single = isinstance(first, int | np.integer)
        if isinstance(first, int | np.integer):
            wanted = [positions[int(first)]]
        else:
            wanted = list(positions[first])
        client = worker_client(self.connection)
        if wanted:
            series_info(client, self.study, self.series)  # one metadata request per process
        pieces = []
        run: list[int] = []
        run_instance = -1
        for position in [*wanted, None]:
            instance = -1 if position is None else bisect.bisect_right(self.starts, position) - 1
            if run and instance != run_instance:
                numbers = [p - self.starts[run_instance] + 1 for p in run]
                pieces.append(client.frames(self.study, self.series,
                                            self.instances[run_instance], numbers))
                run = []
            if position is not None:
                run.append(position)
                run_instance = instance
        out = (np.concatenate(pieces) if pieces
               else np.empty((0, *self.shape[1:]), dtype=self.dtype))
        out = out[(slice(None), *rest)]
        return out[0] if single else out


def series_array(url: str, study: str, series: str, *, token: Any = None,
                 scopes: str | Sequence[str] = (), auth: Any = None, verify: bool | str = True,
                 timeout: float | tuple[float, float] | None = 30.0) -> da.Array:
    """The frames of a series as a lazy ``dask.array``, shape ``(frames, rows, columns[,
    samples])`` in slice order (as ``client.volume`` stacks them: stored values, no geometry;
    :func:`series_image` gives modality values and geometry), one chunk per instance.

    Shape and dtype come from the series metadata (one request, made here); each chunk is
    fetched by the worker that needs it, so ``series_array(...).mean().compute()`` on a cluster
    never holds the volume in one place. The instances must share frame shape and dtype.
    """
    connection = Connection(url, token=token, auth=auth, verify=verify, timeout=timeout,
                            scopes=scopes)
    with connection.client(progress=False) as client:
        infos = slice_order(series_info(client, study, series))
    if not infos:
        raise errors.EmptyResponse("GET", ResourcePath(study, series).url(connection.url)
                                   + "/metadata", "the series has no image instances")
    kinds = {(info.desc.frame_shape, info.desc.dtype) for info in infos}
    if len(kinds) > 1:
        listed = ", ".join(f"{shape} {dtype}" for shape, dtype in sorted(kinds, key=str))
        raise ValueError(f"the instances differ in frame shape or dtype ({listed}); "
                         "read them one by one")
    desc = infos[0].desc
    counts = [info.number_of_frames for info in infos]
    source = SeriesFrames(connection, study, series, [info.sop for info in infos], counts,
                          desc.frame_shape, desc.dtype)
    chunks = (tuple(counts), *((size,) for size in desc.frame_shape))
    name = "dicomweb-series-" + tokenize(source)
    return da.from_array(source, chunks=chunks, name=name, asarray=False, fancy=False,
                         lock=False, meta=np.empty((0,) * source.ndim, dtype=desc.dtype))


def _image_chunk(connection: Connection, plan: ImagePlan, start: int, stop: int) -> np.ndarray:
    """Slices ``start:stop`` of an image plan, fetched by the worker that runs the task."""
    out = np.empty((stop - start, *plan.frame_shape), dtype=plan.dtype)
    fill_slices(worker_client(connection), plan, out, start, workers=2)
    return out


def series_image(url: str, study: str, series: str, *, instances: Sequence[str] | None = None,
                 units: str = "modality", slices_per_chunk: int | None = None,
                 token: Any = None, scopes: str | Sequence[str] = (), auth: Any = None,
                 verify: bool | str = True,
                 timeout: float | tuple[float, float] | None = 30.0) -> xarray.DataArray:
    """:meth:`Client.image <dicomframes.client.Client.image>` as a lazy DataArray: the same
    dims, coordinates (mm), attrs and values, backed by a dask array.

    The metadata is read here (one request) to plan order, geometry and rescale, and any
    geometry warning is given here; each chunk (``slices_per_chunk`` slices, by default about
    32 MB of output) is fetched and rescaled by the worker that computes it.
    """
    connection = Connection(url, token=token, auth=auth, verify=verify, timeout=timeout,
                            scopes=scopes)
    with connection.client(progress=False) as client:
        plan = plan_image(client, study, series, instances=instances, units=units)
    itemsize = np.dtype(plan.dtype).itemsize * int(np.prod(plan.frame_shape))
    per_chunk = int(slices_per_chunk or max(1, IMAGE_CHUNK_BYTES // itemsize))
    if per_chunk < 1:
        raise ValueError(f"slices_per_chunk must be at least 1, got {slices_per_chunk}")
    name = "dicomweb-image-" + tokenize(
        connection, study, series, units, [(s.sop, s.frame) for s in plan.slices], per_chunk)
    total = len(plan.slices)
    blocks = []
    for index, start in enumerate(range(0, total, per_chunk)):
        stop = min(total, start + per_chunk)
        task = dask.delayed(_image_chunk, pure=True)(connection, plan, start, stop,
                                                     dask_key_name=f"{name}-{index}")
        blocks.append(da.from_delayed(task, shape=(stop - start, *plan.frame_shape),
                                      dtype=np.dtype(plan.dtype)))
    return image_array(plan, da.concatenate(blocks, axis=0))


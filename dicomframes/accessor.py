"""``df.dicom``: the one place where DataFrames meet the Client that made them.

Importing this module registers the accessor (``import dicomframes`` does), so DataFrames read
back from CSV or Parquet have it too. The UIDs of the rows come from their UID columns, or from
the RetrieveURL column when a server leaves a UID out; each follow-up call goes through the
Client's public methods.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pydicom

from .convert.link import ATTRS_KEY, TableLink, link_of
from .convert.rows import is_missing
from .convert.tables import STRING_DTYPE, to_dataframe
from .errors import DicomFramesError
from .standard.attributes import LEVELS, UID_KEYWORDS
from .standard.paths import ResourcePath
from .standard.tags import UnknownAttribute, tag_of

if TYPE_CHECKING:
    import xarray as xr

    from .client import Client

__all__ = ["DicomAccessor", "linked_client"]

# StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID: the UID columns, top level first.
_UID_COLUMNS = tuple(UID_KEYWORDS[level] for level in LEVELS)


def _url_uids(url: Any) -> tuple[str | None, str | None, str | None]:
    """(study, series, instance) UIDs of a RetrieveURL; Nones when it names no resource."""
    if not isinstance(url, str):
        return (None, None, None)
    try:
        path = ResourcePath.parse(url)
    except ValueError:
        return (None, None, None)
    return (path.study, path.series, path.instance)


def linked_client(obj: Any) -> Client | None:
    """The Client of a DataFrame or Series: the one that made it, else (read back from a file,
    its link keeps only the URL) a new ``dicomframes.connect(url)`` without credentials, kept
    on the object; None when it has no link. Never another client's credentials."""
    link = link_of(obj)
    if link is None:
        return None
    if link.client is not None:
        return link.client
    if link.url is None:
        return None
    # the HTTP client loads on first use, not with ``import dicomframes``
    from .client import connect

    client = connect(link.url)
    attrs = getattr(obj, "attrs", None)
    if isinstance(attrs, dict):
        attrs[ATTRS_KEY] = TableLink(client, link.vrs)
    return client


@pd.api.extensions.register_dataframe_accessor("dicom")
class DicomAccessor:
    """``df.dicom``: follow-up DICOMweb calls for the rows of a dicomframes DataFrame.

    ``studies.dicom.series()``, ``series.dicom.instances()``, ``instances.dicom.metadata()``,
    ``instances.dicom.frames()``, ``series.dicom.images()``, ``df.dicom.retrieve()``,
    ``df.dicom.download(folder)`` and ``df.dicom.delete()`` call the
    :class:`~dicomframes.client.Client` that made the DataFrame with the UIDs of its rows
    (columns StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID, or the RetrieveURL column
    when a server leaves a UID out). DataFrames made elsewhere (read from a CSV, say) get a
    client with ``df.dicom.client = client``.
    """

    def __init__(self, df: pd.DataFrame) -> None:
        self._df = df

    @property
    def client(self) -> Client:
        """The Client of this DataFrame (raises if there is none).

        The one that made it; for a DataFrame read back from Parquet or Feather (its attrs
        keep only the server's URL), a new ``dicomframes.connect(url)`` without credentials,
        even when a client of that URL with credentials exists in this process: set that one
        with ``df.dicom.use(client)`` for a server that needs them.
        """
        client = linked_client(self._df)
        if client is None:
            raise DicomFramesError(
                "this DataFrame has no dicomframes client: it was not made by a Client, or "
                "the link was lost (e.g. read back from a CSV file); set one with "
                "df.dicom.use(dicomframes.connect(...))"
            )
        return client

    @client.setter
    def client(self, client: Client) -> None:
        link = link_of(self._df)
        self._df.attrs[ATTRS_KEY] = TableLink(client, link.vrs if link else {})

    def use(self, client: Client) -> pd.DataFrame:
        """Make ``client`` this DataFrame's client (e.g. one with credentials, for a DataFrame
        read back from a file); returns the DataFrame."""
        self.client = client
        return self._df

    # rows -> UIDs
    def _uids(self, depth: int, what: str) -> list[tuple[str, ...]]:
        """Unique UID tuples (study[, series[, instance]]) of the rows, in row order."""
        df = self._df
        found: list[list[Any]] = []
        from_urls = None
        if "RetrieveURL" in df.columns and not set(_UID_COLUMNS[:depth]) <= set(df.columns):
            from_urls = [_url_uids(u) for u in df["RetrieveURL"]]
        for i, column in enumerate(_UID_COLUMNS[:depth]):
            if column in df.columns:
                found.append(df[column].tolist())
            elif from_urls is not None:
                found.append([uids[i] for uids in from_urls])
            else:
                raise DicomFramesError(
                    f"df.dicom.{what}() needs a {column} column (or RetrieveURL); this "
                    f"DataFrame has {list(df.columns)[:8]}..."
                )
        out: list[tuple[str, ...]] = []
        seen: set[tuple[str, ...]] = set()
        for uids in zip(*found, strict=True):
            if any(is_missing(u) for u in uids):
                continue
            key = tuple(str(u) for u in uids)
            if key not in seen:
                seen.add(key)
                out.append(key)
        return out

    def _instance_uids(self, what: str) -> list[tuple[str, str, str]]:
        """Unique (study, series, instance) UIDs of the rows, in row order."""
        return [(study, series, sop) for study, series, sop in self._uids(3, what)]

    def _depth(self) -> int:
        """How deep the rows go: 3 instances, 2 series, 1 studies."""
        columns = set(self._df.columns)
        for depth in (3, 2, 1):
            if _UID_COLUMNS[depth - 1] in columns:
                return depth
        if "RetrieveURL" in columns and len(self._df):
            return max(
                sum(1 for uid in _url_uids(u) if uid) for u in self._df["RetrieveURL"]
            )
        raise DicomFramesError(
            "this DataFrame has no StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID "
            "column (nor RetrieveURL): df.dicom cannot tell which studies it is about"
        )

    def _concat(self, frames: list[pd.DataFrame], level: str) -> pd.DataFrame:
        client = self.client
        frames = [f for f in frames if f is not None]
        if not frames:
            return to_dataframe([], level=level, client=client)
        if len(frames) == 1:
            out = frames[0]
        else:
            with warnings.catch_warnings():
                # all-NA columns of some frames: their dtype does not matter here
                warnings.simplefilter("ignore", FutureWarning)
                out = pd.concat([f for f in frames if len(f.columns)], ignore_index=True)
        link = link_of(out)
        out.attrs[ATTRS_KEY] = TableLink(client, link.vrs if link else {})
        return out

    # follow-up calls
    def _with_uids(self, frame: pd.DataFrame, *uids: str) -> pd.DataFrame:
        """Add the UIDs a call was made with as columns when the answer leaves them out
        (QIDO answers within a study or series need not repeat its UID)."""
        for column, uid in zip(_UID_COLUMNS, uids, strict=False):
            if column in frame.columns or not len(frame):
                continue
            tag = tag_of(column)
            position = len(frame.columns)
            for i, name in enumerate(frame.columns):
                try:
                    if tag_of(name) > tag:
                        position = i
                        break
                except UnknownAttribute:
                    continue
            frame = frame.copy()
            frame.insert(position, column, pd.array([uid] * len(frame), dtype=STRING_DTYPE))
        return frame

    def studies(self, **filters: Any) -> pd.DataFrame:
        """QIDO-RS studies of the rows' StudyInstanceUIDs (one search per study)."""
        client = self.client
        frames = [
            client.search_studies(StudyInstanceUID=study, **filters)
            for (study,) in self._uids(1, "studies")
        ]
        return self._concat(frames, "study")

    def series(self, **filters: Any) -> pd.DataFrame:
        """QIDO-RS series of the rows' studies (``filters`` as for ``search_series``)."""
        client = self.client
        frames = [
            self._with_uids(client.search_series(study=study, **filters), study)
            for (study,) in self._uids(1, "series")
        ]
        return self._concat(frames, "series")

    def instances(self, **filters: Any) -> pd.DataFrame:
        """QIDO-RS instances of the rows' series (or of their studies, for study rows)."""
        client = self.client
        if self._depth() >= 2:
            frames = [
                self._with_uids(
                    client.search_instances(study=study, series=series, **filters), study, series
                )
                for study, series in self._uids(2, "instances")
            ]
        else:
            frames = [
                self._with_uids(client.search_instances(study=study, **filters), study)
                for (study,) in self._uids(1, "instances")
            ]
        return self._concat(frames, "instance")

    def metadata(self, **options: Any) -> pd.DataFrame:
        """WADO-RS metadata of the rows (instances, series or studies), one row per instance.

        Instance rows: each instance's metadata, fetched per series when several instances
        of one series are asked for (then kept to the instances of this DataFrame, in its
        row order).
        """
        client = self.client
        depth = self._depth()
        if depth == 1:
            frames = [client.metadata(study, **options) for (study,) in self._uids(1, "metadata")]
            return self._concat(frames, "instance")
        if depth == 2:
            frames = [client.metadata(study, series, **options)
                      for study, series in self._uids(2, "metadata")]
            return self._concat(frames, "instance")
        wanted = self._instance_uids("metadata")
        by_series: dict[tuple[str, str], list[str]] = {}
        for study, series, sop in wanted:
            by_series.setdefault((study, series), []).append(sop)
        frames = []
        for (study, series), sops in by_series.items():
            if len(sops) <= 3:
                frames += [client.metadata(study, series, sop, **options) for sop in sops]
                continue
            frame = client.metadata(study, series, **options)
            if "SOPInstanceUID" in frame.columns:
                frame = frame[frame["SOPInstanceUID"].isin(sops)]
            frames.append(frame)
        return _in_row_order(self._concat(frames, "instance"), [sop for _, _, sop in wanted])

    def frames(
        self, frame: int | None = None, *, stack: bool = True, order: str = "slice", **options: Any
    ) -> np.ndarray | list[np.ndarray]:
        """Pixel data of the instance rows: the stored values (``images()`` gives them in
        modality units with their geometry).

        ``stack=True`` (default) gives one array: the instances fetched concurrently and ordered
        along the slice normal (ImagePositionPatient), else by InstanceNumber (``order="given"``
        keeps row order); ``frame`` picks one frame of each instance, None takes all. Instances
        of different shapes cannot stack: ``stack=False`` gives a list, one array per row.
        """
        client = self.client
        uids = self._instance_uids("frames")
        if not stack:
            return [client.frames(study, series, sop, frames=frame, **options)
                    for study, series, sop in uids]
        # the HTTP client loads on first use, not with ``import dicomframes``
        from .client.frames import fetch_stack

        return fetch_stack(client, uids, frame=frame, order=order, **options)

    def images(self, *, units: str = "modality", progress: bool = True,
               **options: Any) -> Iterator[xr.DataArray]:
        """One :meth:`Client.image <dicomframes.client.Client.image>` DataArray per series of
        the rows (series or instance rows; instance rows give the image of those instances),
        fetched lazily, one at a time as the iterator is advanced, with a progress bar
        (``progress``). ``units`` and ``options`` (``workers``) as for ``client.image``."""
        client = self.client
        by_series: dict[tuple[str, str], list[str] | None]
        if self._depth() >= 3:
            listed: dict[tuple[str, str], list[str]] = {}
            for study, series, sop in self._instance_uids("images"):
                listed.setdefault((study, series), []).append(sop)
            by_series = dict(listed.items())
        else:
            by_series = {(study, series): None for study, series in self._uids(2, "images")}
        from tqdm.auto import tqdm

        with tqdm(total=len(by_series), desc="images", unit=" series",
                  disable=not progress) as bar:
            for (study, series), sops in by_series.items():
                yield client.image(study, series, instances=sops, units=units, **options)
                bar.update(1)

    def retrieve(self, **options: Any) -> list[pydicom.Dataset]:
        """WADO-RS retrieve of the rows (instances, series or studies) as pydicom Datasets."""
        client = self.client
        depth = self._depth()
        out: list[pydicom.Dataset] = []
        for uids in self._uids(depth, "retrieve"):
            out.extend(client.retrieve(*uids, **options))
        return out

    def download(self, folder: str | os.PathLike[str], *, workers: int | None = None,
                 progress: bool = True) -> pd.DataFrame:
        """Bring the rows' studies, series or instances to ``folder``, one DICOM file per
        instance as ``folder/StudyInstanceUID/SeriesInstanceUID/SOPInstanceUID.dcm``.

        Resumable (run it again after an interruption: what is on disk is not fetched again),
        several series at a time (``workers``; default by the measured round trip), with a
        progress bar. Returns one row per series with the instances ``expected`` (the series'
        count on the server, or the instance rows asked for), ``on_disk``, ``fetched`` now and
        ``complete``; an incomplete series warns (``IncompleteDownload``) with the counts.
        """
        from .client.download import download_selection

        depth = self._depth()
        return download_selection(self.client, folder, depth, self._uids(depth, "download"),
                                  workers=workers, progress=progress)

    def delete(self) -> None:
        """Delete the rows' instances, series or studies from the server (not in PS3.18;
        servers without DELETE raise their own error)."""
        client = self.client
        depth = self._depth()
        for uids in self._uids(depth, "delete"):
            client.delete(*uids)


def _in_row_order(out: pd.DataFrame, sops: list[str]) -> pd.DataFrame:
    """``out`` sorted by the position of its SOPInstanceUID in ``sops`` (others last)."""
    if "SOPInstanceUID" not in out.columns or not len(out):
        return out
    order = {sop: i for i, sop in enumerate(sops)}
    position = out["SOPInstanceUID"].map(lambda s: order.get(s, len(order)))
    out = out.iloc[np.argsort(position.to_numpy(), kind="stable")]
    return out.reset_index(drop=True)

"""What a dicomframes DataFrame keeps in ``df.attrs["dicomframes"]``: its server and VRs.

:func:`dicomframes.convert.tables.to_dataframe` attaches a :class:`TableLink`: a small dict of
JSON-serialisable facts (``{"url": ..., "vrs": {...}}``: the server's base URL, never a
credential, and the VRs the JSON gave that differ from the dictionary's), so that pandas can
write ``attrs`` into Parquet and Feather files. The live client travels next to those facts as
an attribute that JSON never sees. A DataFrame read back from a file has only the facts: the
``df.dicom`` accessor then connects to its URL anew, without credentials, and never borrows
another client's (``df.dicom.use(client)`` gives it one). No registry of clients is kept here.

The client is only carried here, never imported: this module knows nothing of HTTP.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ATTRS_KEY", "TableLink", "link_of"]

#: The key of ``DataFrame.attrs`` (and ``Series.attrs``) that holds the link.
ATTRS_KEY = "dicomframes"


class TableLink(dict):
    """A DataFrame's server URL and VRs (dict items, JSON-serialisable) and its Client.

    The items are ``url`` (the client's public base URL, or None) and ``vrs`` (attribute ->
    VR, for the attributes whose JSON VR differs from the dictionary's). ``client`` is a
    plain attribute: ``json.dumps`` writes only the items, copies share the client, and
    pickling drops it.
    """

    def __init__(self, client: Any = None, vrs: dict[str, str] | None = None,
                 url: str | None = None) -> None:
        if url is None and client is not None:
            found = getattr(client, "url", None)
            url = found if isinstance(found, str) else None
        super().__init__(url=url, vrs=dict(vrs or {}))
        self.client = client

    @property
    def vrs(self) -> dict[str, str]:
        """Attribute -> VR, where the JSON's VR differs from the dictionary's."""
        vrs = self.get("vrs")
        return vrs if isinstance(vrs, dict) else {}

    @property
    def url(self) -> str | None:
        """The base URL of the server the DataFrame came from."""
        url = self.get("url")
        return url if isinstance(url, str) else None

    def __deepcopy__(self, memo: dict) -> TableLink:
        return TableLink(self.client, dict(self.vrs), self.url)

    def __copy__(self) -> TableLink:
        return TableLink(self.client, self.vrs, self.url)

    def __reduce__(self) -> tuple:
        return (TableLink, (None, dict(self.vrs), self.url))

    def __repr__(self) -> str:
        return f"<dicomframes link: {self.url or type(self.client).__name__}>"


def link_of(obj: Any) -> TableLink | None:
    """The link of a DataFrame or Series (None when it has none).

    A plain dict (what ``attrs`` holds after a Parquet or Feather round trip) is read as a
    link without a client.
    """
    attrs = getattr(obj, "attrs", None)
    link = attrs.get(ATTRS_KEY) if isinstance(attrs, dict) else None
    if isinstance(link, TableLink):
        return link
    if isinstance(link, dict) and ("url" in link or "vrs" in link):
        url = link.get("url")
        vrs = link.get("vrs")
        return TableLink(None, vrs if isinstance(vrs, dict) else {},
                         url if isinstance(url, str) else None)
    return None

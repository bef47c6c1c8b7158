"""What a dicomframes DataFrame keeps in ``df.attrs["dicomframes"]``: its client and VRs.

:func:`dicomframes.tables.to_dataframe` attaches a :class:`TableLink`; the ``df.dicom``
accessor reads its client and :func:`dicomframes.rows.row_to_dataset` its VRs. The client is
only carried here, never imported: this module knows nothing of HTTP.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ATTRS_KEY", "TableLink", "link_of"]

#: The key of ``DataFrame.attrs`` (and ``Series.attrs``) that holds the link.
ATTRS_KEY = "dicomframes"


class TableLink:
    """A DataFrame's Client and the VRs its JSON gave that differ from the dictionary's.

    A reference only: copies of the DataFrame share it, and pickling drops the client.
    """

    __slots__ = ("client", "vrs")

    def __init__(self, client: Any = None, vrs: dict[str, str] | None = None) -> None:
        self.client = client
        self.vrs = vrs or {}

    def __deepcopy__(self, memo: dict) -> TableLink:
        return self

    def __copy__(self) -> TableLink:
        return self

    def __reduce__(self) -> tuple:
        return (TableLink, (None, self.vrs))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, TableLink) and other.client is self.client
                and other.vrs == self.vrs)

    def __hash__(self) -> int:
        return id(self.client)

    def __repr__(self) -> str:
        return f"<dicomframes link: {type(self.client).__name__}>"


def link_of(obj: Any) -> TableLink | None:
    """The link of a DataFrame or Series (None when it has none)."""
    attrs = getattr(obj, "attrs", None)
    link = attrs.get(ATTRS_KEY) if isinstance(attrs, dict) else None
    return link if isinstance(link, TableLink) else None

"""The parts of a multipart/related body: their header fields and content."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from ..mediatypes import transfer_syntax_of

__all__ = ["Part"]



class Headers(MutableMapping[str, str]):
    """Header fields of one part: case-insensitive lookup, names kept as they were sent."""

    __slots__ = ("_items",)

    def __init__(self, data: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
                 /, **fields: str) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        if data is not None:
            self.update(data)
        if fields:
            self.update(fields)

    def __getitem__(self, name: str) -> str:
        if not isinstance(name, str):
            raise KeyError(name)
        return self._items[name.lower()][1]

    def __setitem__(self, name: str, value: str) -> None:
        self._items[name.lower()] = (name, value)

    def __delitem__(self, name: str) -> None:
        del self._items[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def get(self, name: str, default: Any = None) -> Any:
        """The value of header ``name`` (any case), or ``default``."""
        item = self._items.get(name.lower()) if isinstance(name, str) else None
        return default if item is None else item[1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return {k: v for k, (_, v) in self._items.items()} == {
            str(k).lower(): v for k, v in other.items()}

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"

    def copy(self) -> Headers:
        """Return an independent copy."""
        return Headers(self)


@dataclass(repr=False)
class Part:
    """One body part: its header fields and its content.

    ``content`` is ``bytes`` or a ``memoryview`` (decoders return views into the body or the
    received chunks; ``bytes(part.content)`` makes an independent copy, ``numpy.frombuffer``
    reads it without one).
    """

    headers: Headers = field(default_factory=Headers)
    content: bytes | memoryview = b""

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):
            self.headers = Headers(self.headers)

    @property
    def content_type(self) -> str | None:
        """The part's ``Content-Type`` header, or None."""
        return self.headers.get("Content-Type")

    @property
    def transfer_syntax(self) -> str | None:
        """The ``transfer-syntax`` parameter of the part's ``Content-Type``, or None."""
        content_type = self.content_type
        return transfer_syntax_of(content_type) if content_type else None

    @property
    def location(self) -> str | None:
        """The part's ``Content-Location`` header, or None."""
        return self.headers.get("Content-Location")

    def __len__(self) -> int:
        return self.content.nbytes if isinstance(self.content, memoryview) else len(self.content)

    def __repr__(self) -> str:
        return f"Part({dict(self.headers.items())!r}, {len(self)} bytes)"

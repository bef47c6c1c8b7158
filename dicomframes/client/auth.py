"""Credentials written into a service URL (``https://user:pw@host/dicomweb``).

The client and the Dask connection both turn them into basic auth and keep them out of the
URL they show, log and pickle; the rule is written here once.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["split_url_credentials"]


def split_url_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """(``url`` without its user and password, ``(user, password)`` or None).

    The user and password are percent-decoded; a URL without ``@`` in its authority comes
    back unchanged (trailing "/" of the path removed) with None.
    """
    parts = urlsplit(str(url).strip())
    netloc = parts.netloc
    credentials = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, _, password = userinfo.partition(":")
        credentials = (unquote(user), unquote(password))
    bare = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), parts.query,
                       parts.fragment))
    return bare, credentials

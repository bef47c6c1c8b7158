"""Bearer tokens that refresh: a fixed string, a function that returns one, or a credential.

``connect(url, token=...)`` takes any of:

- a string: sent as it is (it cannot be refreshed);
- a zero-argument callable returning a string (or an object with ``.token`` and
  ``.expires_on``): called for the first request, then again when a request is refused with
  401 (once per request, never in a loop) or when its ``expires_on`` comes near;
- a credential with ``get_token(*scopes)`` (azure-identity's ``TokenCredential`` protocol,
  e.g. ``DefaultAzureCredential()``), which returns an object with ``.token`` and
  ``.expires_on`` (seconds since the epoch); ``scopes`` names what the token is for (the
  Azure DICOM service: :data:`AZURE_DICOM_SCOPE`).

A token is asked for again :data:`REFRESH_MARGIN` seconds (or a quarter of its lifetime, if
shorter) before it expires. Threads share one :class:`TokenProvider`: when several requests
meet a 401 at once, the first asks for a new token and the others use it. The token appears in
no ``repr``, log line or error; the exchange recorder learns each new one to scrub it.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import requests
from requests.auth import AuthBase

__all__ = ["AZURE_DICOM_SCOPE", "REFRESH_MARGIN", "AccessToken", "BearerTokenAuth",
           "TokenFile", "TokenProvider", "check_picklable", "provider_for"]

#: The scope of a token for the Azure Health Data Services DICOM service.
AZURE_DICOM_SCOPE = "https://dicom.healthcareapis.azure.com/.default"
#: Seconds before ``expires_on`` at which a token is asked for again.
REFRESH_MARGIN = 300.0


class AccessToken(NamedTuple):
    """A token and when it expires (seconds since the epoch), as azure-core's AccessToken."""

    token: str
    expires_on: int

    def __repr__(self) -> str:
        return f"AccessToken(***, expires_on={self.expires_on})"

    def __str__(self) -> str:
        return repr(self)


def _valid(token: Any, source: str) -> str:
    if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
        raise ValueError(f"{source} must give a non-empty single-line string as the token")
    return token


class TokenProvider:
    """The current bearer token from ``source`` (a string, a zero-argument callable or a
    credential with ``get_token``), fetched again before it expires or after a 401.

    Picklable when its source is (the cached token is not pickled: a worker fetches its own).
    ``fetches`` counts the tokens obtained in this process.
    """

    def __init__(self, source: Any, scopes: Sequence[str] = ()) -> None:
        if isinstance(scopes, str):
            scopes = (scopes,)
        if isinstance(source, str):
            _valid(source, "token=")
        elif not (callable(source) or callable(getattr(source, "get_token", None))):
            raise TypeError("token= takes a string, a zero-argument callable returning one, or "
                            "a credential with get_token(*scopes) (e.g. azure-identity's "
                            f"DefaultAzureCredential), not {type(source).__name__}")
        self.source = source
        self.scopes = tuple(str(s) for s in scopes)
        self._init_cache()

    def _init_cache(self) -> None:
        self._lock = threading.Lock()
        self._token: str | None = self.source if isinstance(self.source, str) else None
        self._expires: float | None = None
        self._refresh_at: float | None = None
        self.fetches = 0
        self.on_token: Callable[[str], None] | None = None

    @property
    def refreshable(self) -> bool:
        """False for a fixed string."""
        return not isinstance(self.source, str)

    @property
    def kind(self) -> str:
        """What the source is, in a few words (never the token)."""
        if isinstance(self.source, str):
            return "bearer token"
        if callable(getattr(self.source, "get_token", None)):
            return f"credential {type(self.source).__name__}"
        return f"token function {getattr(self.source, '__name__', type(self.source).__name__)}"

    def _fetch(self) -> None:
        if callable(getattr(self.source, "get_token", None)):
            answer = self.source.get_token(*self.scopes)
        else:
            answer = self.source()
        token = getattr(answer, "token", answer)
        _valid(token, f"the {self.kind}")
        expires = getattr(answer, "expires_on", None)
        now = time.time()
        self._token = token
        self._expires = None if expires is None else float(expires)
        self._refresh_at = None
        if self._expires is not None:
            margin = min(REFRESH_MARGIN, max(0.0, self._expires - now) / 4)
            self._refresh_at = self._expires - margin
        self.fetches += 1
        if self.on_token is not None:
            self.on_token(token)

    def current(self) -> str:
        """The token to send now (fetched when there is none or it is about to expire)."""
        with self._lock:
            if self._token is None or (self._refresh_at is not None
                                       and time.time() >= self._refresh_at):
                self._fetch()
            assert self._token is not None
            return self._token

    def refresh(self, refused: str | None) -> bool:
        """After a 401 to a request that carried ``refused``: fetch a new token, unless another
        thread already did. True when the request may be sent again with another token."""
        if not self.refreshable:
            return False
        with self._lock:
            if self._token is not None and self._token != refused:
                return True  # another thread refreshed meanwhile
            self._fetch()
            return self._token != refused

    def __repr__(self) -> str:
        scopes = f", scopes={list(self.scopes)}" if self.scopes else ""
        return f"TokenProvider({self.kind}{scopes})"

    __str__ = __repr__

    def __getstate__(self) -> dict[str, Any]:
        return {"source": self.source, "scopes": self.scopes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.source = state["source"]
        self.scopes = state["scopes"]
        self._init_cache()


def provider_for(token: Any, scopes: str | Sequence[str] = ()) -> TokenProvider:
    """``token`` (a string, token function, credential or TokenProvider) as a provider."""
    return token if isinstance(token, TokenProvider) else TokenProvider(token, scopes)


class BearerTokenAuth(AuthBase):
    """``Authorization: Bearer <token>`` from a :class:`TokenProvider`; ``refresh`` is called
    by the transport after a 401. Never shows the token in ``repr`` or ``str``."""

    def __init__(self, provider: TokenProvider) -> None:
        self.provider = provider

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.provider.current()}"
        return r

    def refresh(self, request: requests.PreparedRequest | None) -> bool:
        """A new token after ``request`` was refused 401; True when resending may help."""
        sent = "" if request is None else str(request.headers.get("Authorization", ""))
        scheme, _, token = sent.partition(" ")
        return self.provider.refresh(token if scheme.lower() == "bearer" else None)

    def __repr__(self) -> str:
        return f"BearerTokenAuth({self.provider!r})"

    __str__ = __repr__


class TokenFile:
    """A token read from a file (one line), again each time it is called: a picklable token
    function for files that another program keeps fresh (e.g. the token file of
    ``dicomframes remote``). ``lifetime``: seconds a token is good for after the file was
    written (then ``expires_on`` is known and the token is read again before it).
    """

    def __init__(self, path: str | os.PathLike[str], lifetime: float | None = None) -> None:
        self.path = Path(path).expanduser()
        self.lifetime = lifetime
        self.__name__ = "TokenFile"

    def __call__(self) -> str | AccessToken:
        try:
            token = self.path.read_text(encoding="utf-8").strip()
            written = self.path.stat().st_mtime
        except OSError as exc:
            raise OSError(f"cannot read the token file {self.path}: {exc.strerror}") from None
        if self.lifetime is None:
            return token
        return AccessToken(token, int(written + self.lifetime))

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r})"


def check_picklable(what: Any, name: str) -> None:
    """Raise TypeError when ``what`` cannot travel to another process (cloudpickle, as Dask
    distributed uses, when installed; else pickle)."""
    try:
        import cloudpickle  # type: ignore[import-untyped]

        dumps: Callable[[Any], bytes] = cloudpickle.dumps
    except ImportError:  # pragma: no cover - distributed brings cloudpickle
        dumps = pickle.dumps
    try:
        dumps(what)
    except Exception as exc:
        raise TypeError(
            f"the Dask workers need their own copy of {name}, but {type(what).__name__} cannot "
            f"be pickled ({type(exc).__name__}: {exc}); pass a picklable token function or "
            "credential (a module-level function, functools.partial, TokenFile, or a credential "
            "the workers can rebuild)") from None

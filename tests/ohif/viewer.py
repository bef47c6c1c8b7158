"""The OHIF viewer for the browser test: installed from npm, served on loopback.

``python tests/ohif/viewer.py install`` (run by .ci/run) fetches the ``@ohif/app`` version that
``package.json`` pins with ``npm pack``, checks the tarball against the pinned integrity and
unpacks it into ``tests/ohif/node_modules/@ohif/app`` (ignored by git). Only its prebuilt
``dist/`` is used; :class:`StaticViewer` serves that folder on 127.0.0.1 with the single-page
app's fallback to ``index.html`` and our own ``app-config.js``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

HERE = Path(__file__).resolve().parent
PACKAGE_JSON = HERE / "package.json"
INSTALLED = HERE / "node_modules" / "@ohif" / "app"


def pinned() -> dict[str, str]:
    """The pinned package: ``package``, ``version`` and ``integrity`` from package.json."""
    return json.loads(PACKAGE_JSON.read_text())["config"]


def dist() -> Path | None:
    """The installed viewer's dist/ folder when the pinned version is installed, else None."""
    try:
        version = json.loads((INSTALLED / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None
    folder = INSTALLED / "dist"
    if version != pinned()["version"] or not (folder / "index.html").is_file():
        return None
    return folder


def install(npm: str = "npm") -> Path:
    """Install the pinned viewer unless it is there; returns its dist/ folder.

    RuntimeError when npm fails or the tarball's sha512 is not the pinned integrity.
    """
    folder = dist()
    if folder is not None:
        return folder
    pin = pinned()
    spec = f"{pin['package']}@{pin['version']}"
    HERE.joinpath("node_modules").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=HERE / "node_modules", prefix=".fetch-") as tmp:
        done = subprocess.run([npm, "pack", spec, "--json", "--pack-destination", tmp,
                               "--loglevel=error"], capture_output=True, text=True,
                              timeout=900, check=False, cwd=tmp)
        if done.returncode:
            raise RuntimeError(f"npm pack {spec} failed ({done.returncode}): {done.stderr}")
        tarball = Path(tmp) / json.loads(done.stdout)[0]["filename"]
        digest = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
        if f"sha512-{digest}" != pin["integrity"]:
            raise RuntimeError(f"{spec}: the tarball's sha512-{digest} is not the integrity "
                               f"pinned in {PACKAGE_JSON}")
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(tarball) as archive:
            archive.extractall(unpacked, filter="data")
        if INSTALLED.exists():
            shutil.rmtree(INSTALLED)
        INSTALLED.parent.mkdir(parents=True, exist_ok=True)
        (unpacked / "package").rename(INSTALLED)
    folder = dist()
    assert folder is not None, f"{spec} has no dist/index.html"
    return folder


class _Handler(SimpleHTTPRequestHandler):
    """Files of dist/, ``overrides`` (path -> bytes) first, index.html for any other path."""

    overrides: ClassVar[dict[str, bytes]] = {}
    extensions_map: ClassVar[dict[str, str]] = {
        **SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm",
        ".js": "text/javascript", ".mjs": "text/javascript"}

    def do_GET(self) -> None:
        """A file, an override, or the single-page app's index.html."""
        path = unquote(urlsplit(self.path).path)
        if path in self.overrides:
            body = self.overrides[path]
            self.send_response(200)
            self.send_header("Content-Type", self.guess_type(path))
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)
            return
        if not Path(self.translate_path(self.path)).is_file():
            self.path = "/index.html"
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test records what the browser asked for itself."""


class StaticViewer:
    """``dist`` served at ``url`` (``http://127.0.0.1:PORT``) from a background thread, with
    ``overrides`` (e.g. ``{"/app-config.js": b"..."}``) in place of those files."""

    def __init__(self, dist: Path, overrides: dict[str, bytes]) -> None:
        handler = type("Handler", (_Handler,), {"overrides": dict(overrides)})

        def make(*args: Any) -> _Handler:
            return handler(*args, directory=str(dist))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), make)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name=f"ohif-static-{self.port}")
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def main(argv: list[str]) -> int:
    """``install``: fetch the pinned viewer (prints the time and size)."""
    if argv != ["install"]:
        print("usage: python tests/ohif/viewer.py install", file=sys.stderr)
        return 2
    started = time.monotonic()
    folder = install()
    size = sum(f.stat().st_size for f in INSTALLED.rglob("*") if f.is_file())
    print(f"OHIF viewer {pinned()['version']} in {folder} ({size / 1e6:.0f} MB unpacked, "
          f"{time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

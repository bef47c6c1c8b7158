"""The ``dicomframes`` command: serve, search, upload, retrieve and a quick-start demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with one sub-command per task."""
    parser = argparse.ArgumentParser(prog="dicomframes", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the embedded DICOMweb server")
    serve.add_argument("--data", required=True, help="folder that holds the archive")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8042, help="port (default 8042; 0 picks one)")
    serve.set_defaults(func=cmd_serve)
    return parser


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the embedded server in the foreground until interrupted."""
    from .server import serve

    server = serve(args.data, host=args.host, port=args.port)
    print(f"dicomframes DICOMweb server at {server.url} (data in {server.path}); Ctrl+C stops it",
          flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dicomframes`` command."""
    args = build_parser().parse_args(argv)
    func: Command = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())

"""The ``dicomframes harvest URL PATH`` command: its arguments and what it runs (added to the
command line by :mod:`dicomframes.cli`)."""

from __future__ import annotations

import argparse
import os
from typing import Any


def add_harvest_command(sub: Any) -> None:
    """Add the ``harvest`` sub-command to the sub-parsers ``sub`` of the command line."""
    harvest = sub.add_parser("harvest", help="write an archive as a Parquet dataset, or bring "
                             "one up to date (--update)")
    harvest.add_argument("url", metavar="URL", help="DICOMweb base URL")
    harvest.add_argument("path", metavar="PATH", help="folder of the Parquet dataset")
    harvest.add_argument("--level", choices=("studies", "series", "instances"),
                         default="instances", help="one row per ... (default instances)")
    harvest.add_argument("--metadata", action="store_true",
                         help="the full WADO-RS metadata of every instance")
    harvest.add_argument("--update", action="store_true",
                         help="apply only what changed since the harvest in PATH (the "
                         "server's change feed, else the studies' counts)")
    harvest.add_argument("--filter", "-f", action="append", default=[], metavar="KEY=VALUE",
                         help="match an attribute, e.g. Modality=CT; repeat for several")
    harvest.add_argument("--token-env", metavar="VAR",
                         help="name of the environment variable that holds a bearer token")
    harvest.add_argument("--quiet", action="store_true", help="no progress bar")
    harvest.set_defaults(func=run_harvest)


def run_harvest(args: argparse.Namespace) -> int:
    """Harvest URL into the Parquet dataset PATH (or update it); print the summary."""
    from .facade import connect

    filters: dict[str, str] = {}
    for pair in args.filter:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--filter wants KEY=VALUE, got {pair!r}")
        filters[key.strip()] = value
    token = None
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            raise ValueError(f"environment variable {args.token_env} is not set")
    client = connect(args.url, token=token) if token else connect(args.url)
    with client:
        summary = client.harvest(args.path, args.level, args.metadata, update=args.update,
                                 progress=not args.quiet, **filters)
    print(summary)
    return 0

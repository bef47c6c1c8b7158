"""The dicomframes command: serve, search, upload, retrieve and a quick-start demo.

Errors are one line on stderr and exit status 2; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import Client

Command = Callable[[argparse.Namespace], int]

DESCRIPTION = "The dicomframes command. Errors: one line on stderr (status 2); --debug: traceback."
DEBUG_HELP = "on an error, print the traceback too"
_MICROSECOND = dt.timedelta(microseconds=1)


def _size(text: str) -> int:
    """A size option (``512M``, ``2G``, bytes); the server's parser, imported when used."""
    from .server.budget import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with one sub-command per task."""
    parser = argparse.ArgumentParser(prog="dicomframes", description=DESCRIPTION)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the embedded DICOMweb server")
    serve.add_argument("--data", required=True, help="folder that holds the archive")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8042, help="port (default 8042; 0 picks one)")
    serve.add_argument("--token-env", metavar="VAR",
                       help="name of the environment variable holding the bearer token every "
                       "request must carry (default: DICOMFRAMES_SERVER_TOKEN when set)")
    serve.add_argument("--token", help="the bearer token itself (visible to other users in "
                       "the process list: prefer --token-env)")
    serve.add_argument("--insecure", action="store_true",
                       help="allow a non-loopback --host without a token (anyone who can reach "
                       "it can read and delete)")
    serve.add_argument("--cors", metavar="ORIGIN", action="append", default=[],
                       help="let web pages from ORIGIN (scheme://host[:port], e.g. "
                       "http://localhost:3000 for an OHIF viewer) call the server; repeatable; "
                       "off by default")
    serve.add_argument("--parse-workers", type=int, metavar="N",
                       help="processes that write and parse the files of large uploads "
                       "(default: one per core, at most 4; 0: none)")
    serve.add_argument("--azure-strict", action="store_true",
                       help="refuse the searches the Azure DICOM service refuses (wildcards, "
                       "attributes it does not search) and answer 204 to a search without "
                       "matches, to test code meant for Azure")
    limits = serve.add_argument_group("limits (README: Limits)")
    limits.add_argument("--memory-budget", metavar="SIZE", type=_size,
                        help="memory the requests running at once may use to decode, render "
                        "and transcode, e.g. 512M or 2G; past it they wait, then get 503 "
                        "(default 768M)")
    limits.add_argument("--max-connections", type=int, metavar="N",
                        help="open connections at once (default 256, or a quarter of the "
                        "open-file limit)")
    limits.add_argument("--connections-per-client", type=int, metavar="N",
                        help="open connections from one client address (default 32)")
    limits.add_argument("--min-body-rate", type=int, metavar="BYTES",
                        help="bytes per second a request body must average after 10 s "
                        "(default 1024)")
    limits.add_argument("--max-inflated", metavar="SIZE", type=_size,
                        help="size a deflated upload may inflate to (default 256M)")
    serve.set_defaults(func=cmd_serve)

    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument("--url", help="DICOMweb base URL (default: env DICOMWEB_URL, else the "
                        "embedded server)")
    remote.add_argument("--token-env", metavar="VAR",
                        help="name of the environment variable that holds a bearer token")
    remote.add_argument("--token-file", metavar="PATH",
                        help="file that holds a bearer token, read again when it is refused")

    upload = sub.add_parser("upload", parents=[remote],
                            help="store files, folders, zip files or glob patterns (STOW-RS)")
    upload.add_argument("paths", nargs="+", metavar="PATH",
                        help="file, folder (recursive), zip file or quoted glob pattern")
    upload.add_argument("--study", help="post to /studies/STUDY (other studies are refused)")
    upload.add_argument("--skip-existing", action="store_true",
                        help="ask the server first and send only what it lacks (resume)")
    upload.add_argument("--workers", type=int, help="parallel requests (default: 4 on a local "
                        "link, more across a network, by the measured round trip)")
    upload.add_argument("--batch-size", type=int, default=100,
                        help="most instances per request (default 100)")
    upload.add_argument("--format", choices=("table", "csv"), default="table",
                        help="outcome as a table (default) or CSV")
    upload.add_argument("--quiet", action="store_true", help="no progress bar")
    upload.set_defaults(func=cmd_upload)

    search = sub.add_parser("search", parents=[remote], help="search (QIDO-RS) into a table")
    search.add_argument("level", choices=("studies", "series", "instances"))
    search.add_argument("--study", help="only within this StudyInstanceUID")
    search.add_argument("--series", help="only within this SeriesInstanceUID (instances)")
    search.add_argument("--filter", "-f", action="append", default=[], metavar="KEY=VALUE",
                        help="match an attribute, e.g. PatientName=Doe* or StudyDate=2020-2021;"
                        " repeat for several")
    search.add_argument("--limit", type=int, help="most results")
    search.add_argument("--format", choices=("table", "csv"), default="table",
                        help="a table of the main columns (default) or CSV of all of them")
    search.add_argument("--all-columns", action="store_true",
                        help="every column in the table format too")
    search.set_defaults(func=cmd_search)

    retrieve = sub.add_parser("retrieve", parents=[remote],
                              help="download a study, series or instance as DICOM files")
    retrieve.add_argument("study", metavar="STUDY")
    retrieve.add_argument("series", metavar="SERIES", nargs="?")
    retrieve.add_argument("instance", metavar="INSTANCE", nargs="?")
    retrieve.add_argument("--out", required=True, help="folder to write STUDY/SERIES/SOP.dcm into")
    retrieve.set_defaults(func=cmd_retrieve)

    imp = sub.add_parser("import", help="index a folder of DICOM files into an archive "
                         "(copied, or --in-place)")
    imp.add_argument("folder", metavar="FOLDER", help="folder of DICOM files (recursive)")
    imp.add_argument("--data", required=True, help="the archive folder (created if needed)")
    imp.add_argument("--in-place", action="store_true",
                     help="link the files instead of copying them (they must stay where they are)")
    imp.add_argument("--format", choices=("table", "csv"), default="table",
                     help="print the failed and skipped files as a table (default), or every "
                     "outcome row as CSV")
    imp.add_argument("--report", metavar="PATH",
                     help="CSV file that receives one outcome row per file (default: "
                     "DATA/reports/import-<UTC time>.csv)")
    imp.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                     help="processes that parse the files (default: one per core)")
    imp.add_argument("--quiet", action="store_true", help="no progress line")
    imp.set_defaults(func=cmd_import)

    from .client.harvest_command import add_harvest_command
    add_harvest_command(sub)
    check = sub.add_parser("check", help="compare every file of an archive with its index "
                           "(start-up does not: it finishes only what was in flight)")
    check.add_argument("--data", required=True, help="the archive folder")
    check.add_argument("--repair", action="store_true",
                       help="make them agree: drop rows whose file is gone or changed (a "
                       "changed file goes to rejected/), index files without a row (stop the "
                       "server on the folder first)")
    check.add_argument("--quiet", action="store_true", help="no progress bar")
    check.set_defaults(func=cmd_check)

    demo = sub.add_parser("demo", help="a one-minute tour on a temporary embedded server")
    demo.set_defaults(func=cmd_demo)

    reset = sub.add_parser("reset", help="delete the embedded server's archive folder "
                           "(default: env DICOMFRAMES_DATA, else ~/.cache/dicomframes/archive)")
    reset.add_argument("--data", help="the archive folder to delete instead of the default one")
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    reset.set_defaults(func=cmd_reset)

    from .testing import remote as remote_like  # standard library only: cheap to import

    imitation = sub.add_parser(
        "remote", help="a remote-like archive on this machine: round trip, bandwidth cap, page "
        "cap, 429s and expiring tokens in front of the embedded server (loopback only)")
    remote_like.add_arguments(imitation)
    imitation.set_defaults(func=remote_like.run_from_arguments)

    for command in sub.choices.values():  # --debug also after the command's name
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help=DEBUG_HELP)
    return parser


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the embedded server in the foreground until interrupted."""
    from .errors import PortInUse
    from .server import TOKEN_ENV, serve
    from .server.parsers import default_workers

    token = args.token
    if args.token_env:
        token = _token_from(args.token_env)
    elif token is None:
        token = os.environ.get(TOKEN_ENV) or None
        if token is not None:
            token = _token_from(TOKEN_ENV)
    elif not token.strip():
        raise UsageError("--token is empty or only whitespace; give a real token")
    try:
        workers = default_workers() if args.parse_workers is None else args.parse_workers
        server = serve(args.data, host=args.host, port=args.port, token=token,
                       insecure=args.insecure, cors=args.cors, parse_workers=max(0, workers),
                       limits=_limits(args),
                       profile="azure" if args.azure_strict else "default")
    except ValueError as exc:  # a malformed --cors origin
        raise UsageError(str(exc)) from None
    except PortInUse:
        also = " (8042 is also Orthanc's default port)" if args.port == 8042 else ""
        raise UsageError(f"port {args.port} on {args.host} is already in use by another "
                         f"program{also}; use --port 0 to pick a free port, or another "
                         "--port") from None
    print(f"dicomframes DICOMweb server at {server.url} (data in {server.path}); Ctrl+C stops it",
          flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _limits(args: argparse.Namespace) -> Any:
    """The server's :class:`~dicomframes.server.Limits`: the defaults, with the options given."""
    from dataclasses import replace

    from .server import Limits

    given = {"memory_budget": args.memory_budget, "max_connections": args.max_connections,
             "connections_per_client": args.connections_per_client,
             "min_body_rate": args.min_body_rate, "max_inflated": args.max_inflated}
    return replace(Limits(), **{k: v for k, v in given.items() if v is not None})


def _token_from(variable: str) -> str:
    """The bearer token in the environment variable ``variable``; one unset, empty or holding
    only whitespace is refused (a server would start that nobody could use)."""
    token = os.environ.get(variable)
    if not token:
        raise UsageError(f"environment variable {variable} is not set")
    if not token.strip():
        raise UsageError(f"environment variable {variable} holds only whitespace, not a token; "
                         f"put the token in it (e.g. export {variable}=$(openssl rand -hex 24))")
    return token


def _connect(args: argparse.Namespace) -> Client:
    """Connect as the options say: --url, else env DICOMWEB_URL, else the embedded server."""
    from . import connect

    token: Any = _token_from(args.token_env) if args.token_env else None
    if token is None and getattr(args, "token_file", None):
        from .client import TokenFile

        token = TokenFile(args.token_file)
    return connect(args.url, token=token) if token else connect(args.url)


def _print_table(df: Any, fmt: str) -> None:
    try:
        if fmt == "csv":
            _with_times_as_text(df).to_csv(sys.stdout, index=False)
        elif len(df) == 0:
            print("(no results)")
        else:
            print(format_table(df))
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `dicomframes search ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _with_times_as_text(df: Any) -> Any:
    """``df`` with its timedelta (TM) columns as ``HH:MM:SS[.ffffff]`` text, for CSV."""
    import pandas as pd

    columns = [c for c in df.columns if pd.api.types.is_timedelta64_dtype(df[c])]
    if not columns:
        return df
    out = df.copy()
    for column in columns:
        out[column] = [None if pd.isna(v) else time_text(v) for v in df[column]]
    return out


def time_text(value: Any) -> str:
    """A time of day held as a timedelta as ``HH:MM:SS``, with ``.ffffff`` when present."""
    micros = int(value // _MICROSECOND)
    sign, micros = ("-", -micros) if micros < 0 else ("", micros)
    seconds, fraction = divmod(micros, 1_000_000)
    text = f"{sign}{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return f"{text}.{fraction:06d}" if fraction else text


def _cell_text(value: Any) -> str:
    import pandas as pd

    if value is None or (not isinstance(value, (list, tuple)) and pd.isna(value)):
        return ""
    if isinstance(value, (list, tuple)):
        return "\\".join(_cell_text(v) for v in value)
    if isinstance(value, dt.datetime) and value == value.replace(hour=0, minute=0, second=0,
                                                                 microsecond=0):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, dt.timedelta):
        return time_text(value)
    return str(value).replace("\n", " ")


def format_table(df: Any, max_width: int = 80) -> str:
    """A plain left-aligned text table (missing values blank; cells cut at ``max_width``)."""
    columns = [str(c) for c in df.columns]
    rows = [[_cell_text(v) for v in row] for row in df.itertuples(index=False)]
    rows = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in row]
            for row in rows]
    widths = [max([len(name)] + [len(row[i]) for row in rows]) for i, name in
              enumerate(columns)]
    lines = ["  ".join(name.ljust(w) for name, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    return "\n".join(lines)


class UsageError(Exception):
    """A problem the command reports as one line (exit status 2), e.g. a busy port."""


def cmd_upload(args: argparse.Namespace) -> int:
    """Store PATHs on the server and print one outcome row per instance; 1 if any failed."""
    from .client.store import FAILED, summary_text

    client = _connect(args)
    df = client.store(args.paths, study=args.study, skip_existing=args.skip_existing,
                      workers=args.workers, batch_size=args.batch_size, progress=not args.quiet)
    shown = df[["source", "SOPInstanceUID", "status", "reason", "message"]]
    _print_table(shown, args.format)
    print(summary_text(df), file=sys.stderr if args.format == "csv" else sys.stdout)
    return 1 if (df["status"] == FAILED).any() else 0


SHOWN_FAILURES = 50  # failed or skipped files printed in the table (all are in the report)


def cmd_import(args: argparse.Namespace) -> int:
    """Index FOLDER into the archive --data. Every outcome row is written to the CSV report
    as it comes (memory stays flat however many files); the failed and skipped files (the
    first SHOWN_FAILURES) and a summary are printed; 1 if any file failed."""
    import csv
    import time
    from pathlib import Path

    from .server.importer import COLUMNS, FAILED, SKIPPED, run_import, summary_of

    start = time.monotonic()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    report = Path(args.report).expanduser() if args.report else \
        Path(args.data).expanduser() / "reports" / f"import-{stamp}.csv"
    report.parent.mkdir(parents=True, exist_ok=True)
    shown = ["source", "SOPInstanceUID", "status", "reason", "message"]
    problems: list[dict[str, Any]] = []
    more = 0

    def progress(done: int, total: int) -> None:
        rate = done / max(time.monotonic() - start, 1e-6)
        print(f"\r{done}/{total} files ({rate:.0f}/s)", end="", file=sys.stderr, flush=True)

    with open(report, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, COLUMNS)
        writer.writeheader()
        echo = csv.DictWriter(sys.stdout, shown, extrasaction="ignore") \
            if args.format == "csv" else None
        if echo is not None:
            echo.writeheader()

        def on_row(row: dict[str, Any]) -> None:
            nonlocal more
            writer.writerow(row)
            if echo is not None:
                echo.writerow(row)
            elif row["status"] in (FAILED, SKIPPED):
                if len(problems) < SHOWN_FAILURES:
                    problems.append(row)
                else:
                    more += 1

        counts = run_import(args.folder, args.data, args.in_place, on_row=on_row,
                            workers=args.workers, progress=None if args.quiet else progress)
    if not args.quiet:
        print(file=sys.stderr)
    if problems:
        import pandas as pd

        _print_table(pd.DataFrame(problems, columns=shown), "table")
        if more:
            print(f"... and {more} more failed or skipped files")
    seconds = time.monotonic() - start
    total = sum(counts.values())
    print(f"{summary_of(counts)} in {seconds:.1f} s ({total / max(seconds, 1e-6):.0f} "
          f"files/s); one row per file in {report}",
          file=sys.stderr if args.format == "csv" else sys.stdout)
    return 1 if counts[FAILED] else 0


def cmd_check(args: argparse.Namespace) -> int:
    """Compare every file of the archive --data with its index; print each difference and a
    summary; with --repair make them agree. 1 if differences are left."""
    from pathlib import Path

    from tqdm import tqdm

    from .server.repair import differences
    from .server.storage import Archive

    folder = Path(args.data).expanduser()
    if not (folder / "index.sqlite3").is_file():
        raise UsageError(f"{folder} is not an archive of the embedded server (no "
                         "index.sqlite3)")
    archive = Archive(folder)
    try:
        if args.repair and archive.recovery is None:
            raise UsageError(f"a server uses {folder}: stop it before check --repair")
        bar = None if args.quiet else tqdm(unit=" studies", file=sys.stderr, leave=False)

        def progress(done: int, total: int) -> None:
            if bar is not None:
                bar.total = total
                bar.update(done - bar.n)

        found: dict[str, int] = {}

        def show(difference: Any) -> None:
            found[difference.kind] = found.get(difference.kind, 0) + 1
            line = f"{difference.kind:9s}  {difference.path}  ({difference.detail})"
            (bar.write if bar is not None else print)(line)

        instances = archive.count()
        if args.repair:
            done = archive.reconcile(progress, show)
        else:
            for difference in differences(archive, progress):
                show(difference)
        if bar is not None:
            bar.close()
    finally:
        archive.close()
    summary = ", ".join(f"{n} {kind}" for kind, n in found.items()) or "no differences"
    print(f"{instances} indexed instances checked against the files of {folder}: {summary}")
    if args.repair and found:
        print("repaired: " + ", ".join(f"{n} {k}" for k, n in done.items() if n))
    return 1 if found and not args.repair else 0


def _filters(pairs: list[str]) -> dict[str, str]:
    filters: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--filter wants KEY=VALUE, got {pair!r}")
        filters[key.strip()] = value
    return filters


def cmd_search(args: argparse.Namespace) -> int:
    """Search studies, series or instances and print them as a table or CSV."""
    filters: dict[str, Any] = _filters(args.filter)
    if args.limit is not None:
        filters["limit"] = args.limit
    client = _connect(args)
    if args.level == "studies":
        df = client.search_studies(**filters)
    elif args.level == "series":
        df = client.search_series(study=args.study, **filters)
    else:
        df = client.search_instances(study=args.study, series=args.series, **filters)
    if args.format == "table" and not args.all_columns:
        wanted = [c for c in _SEARCH_COLUMNS[args.level] if c in df.columns]
        df = df[wanted] if wanted else df
    _print_table(df, args.format)
    return 0


_SEARCH_COLUMNS = {
    "studies": ["PatientName", "PatientID", "StudyDate", "ModalitiesInStudy", "AccessionNumber",
                "StudyDescription", "NumberOfStudyRelatedSeries",
                "NumberOfStudyRelatedInstances", "StudyInstanceUID"],
    "series": ["PatientName", "SeriesNumber", "Modality", "SeriesDescription",
               "NumberOfSeriesRelatedInstances", "SeriesInstanceUID"],
    "instances": ["SeriesNumber", "InstanceNumber", "Rows", "Columns", "NumberOfFrames",
                  "SOPInstanceUID"],
}


def cmd_retrieve(args: argparse.Namespace) -> int:
    """Download a study, series or instance into OUT/STUDY/SERIES/SOP.dcm."""
    from .client.download import download

    client = _connect(args)
    paths = download(client, args.out, args.study, args.series, args.instance)
    for path in paths:
        print(path)
    print(f"{len(paths)} file{'s' if len(paths) != 1 else ''} written under {args.out}",
          file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Start a throw-away embedded server, store the tutorial's three files and look at them."""
    import tempfile
    from pathlib import Path

    from . import connect
    from .client.store import summary_text
    from .samples import write_tutorial_files
    from .server import serve

    def pick(df: Any, names: Sequence[str]) -> Any:
        return df[[c for c in names if c in df.columns]]

    with tempfile.TemporaryDirectory(prefix="dicomframes-demo-") as tmp, \
            serve(Path(tmp) / "archive") as server:
        print(f"A temporary DICOMweb server is running at {server.url}\n")
        files = write_tutorial_files(Path(tmp) / "samples")
        client = connect(server.url)
        print(">>> client = dicomframes.connect(url)")
        stored = client.store(files, progress=False)
        print(f">>> client.store([{len(files)} sample files])   # {summary_text(stored)}")
        studies = client.search_studies()
        print(">>> client.search_studies()")
        print(_indent(format_table(pick(studies, [
            "PatientName", "PatientID", "StudyDate", "ModalitiesInStudy",
            "NumberOfStudyRelatedInstances", "StudyInstanceUID"]))))
        study = str(studies["StudyInstanceUID"].iloc[0])
        first = client.search_instances(study=study).iloc[0]
        series, sop = str(first["SeriesInstanceUID"]), str(first["SOPInstanceUID"])
        meta = client.metadata(study, series, sop)
        print(">>> client.metadata(study, series, instance)")
        print(_indent(format_table(pick(meta, [
            "SOPInstanceUID", "Rows", "Columns", "PhotometricInterpretation",
            "BitsAllocated"]))))
        frames = client.frames(study, series, sop)
        print(">>> client.frames(study, series, instance)")
        print(_indent(f"numpy array, shape {tuple(frames.shape)}, dtype {frames.dtype}"))
        print("\nNext: the notebooks in notebooks/, or `dicomframes serve --data DIR` for an "
              "archive that stays.")
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    """Delete an embedded archive folder (the default one unless ``--data``), after asking."""
    import shutil
    from pathlib import Path

    from .server import default_archive

    folder = Path(args.data).expanduser() if args.data else default_archive()
    if not folder.exists():
        print(f"nothing to reset: {folder} does not exist")
        return 0
    files = [path for path in folder.rglob("*") if path.is_file()]
    if files and not (folder / "index.sqlite3").exists():
        print(f"dicomframes: {folder} is not an archive of the embedded server (no "
              "index.sqlite3): not deleted", file=sys.stderr)
        return 1
    size = sum(path.stat().st_size for path in files) / 1e6
    what = f"{folder} ({len(files)} files, {size:.1f} MB)"
    if not args.yes:
        if not sys.stdin.isatty():
            print(f"dicomframes: would delete {what}; add --yes to confirm", file=sys.stderr)
            return 1
        if input(f"Delete {what}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    shutil.rmtree(folder)
    print(f"deleted {what}")
    return 0


def _indent(text: str) -> str:
    return "\n".join("   " + line for line in text.splitlines())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dicomframes`` command.

    An error is one line on stderr with exit status 2 (1 for an unexpected one); the
    traceback is printed only under ``--debug``.
    """
    from .errors import DicomFramesError

    args = build_parser().parse_args(argv)
    func: Command = args.func
    debug = bool(getattr(args, "debug", False))
    try:
        return func(args)
    except KeyboardInterrupt:
        print("dicomframes: interrupted", file=sys.stderr)
        return 130
    except (DicomFramesError, UsageError, ValueError, OSError) as exc:
        return _report(exc, debug, 2)
    except Exception as exc:  # a bug: still one line, and the way to see more
        return _report(exc, debug, 1, unexpected=True)


def _report(exc: BaseException, debug: bool, status: int, unexpected: bool = False) -> int:
    """Print ``exc`` as one line on stderr (after its traceback under --debug)."""
    import traceback

    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    text = " ".join(str(exc).split()) or type(exc).__name__
    if unexpected:
        text = f"unexpected {type(exc).__name__}: {text}"
        if not debug:
            text += " (run with --debug for the traceback)"
    print(f"dicomframes: error: {text}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())

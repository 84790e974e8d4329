"""Command line: `codeformer restore | convert | download | train | codes | prepare-faces`.

This module only parses arguments and calls the library. Each subcommand has an `_add_<name>` function that
declares its arguments and a `_run_<name>` function that calls the library and returns an exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys


def _add_download(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="list or fetch the released weight files (verified, cached)")
    p.add_argument("names", nargs="*", metavar="NAME", help="weight files to fetch, e.g. codeformer.pth")
    p.add_argument("--all", action="store_true", help="fetch every file in the table")
    p.add_argument("--list", action="store_true", help="list the table: name, size, licence, cached or not")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_download)


def _run_download(args: argparse.Namespace) -> int:
    from codeformer import weights

    if args.list:
        for w in weights.WEIGHTS:
            size = f"{w.size / 1e6:.1f} MB" if w.size is not None else "size ?"
            where = str(weights.cache_path(w.name)) if weights.is_cached(w.name) else "not cached"
            print(f"{w.name:32} {size:>10}  {w.licence:36}  {where}")
        if not args.names and not args.all:
            return 0
    names = [w.name for w in weights.WEIGHTS] if args.all else args.names
    if not names:
        print("codeformer download: give NAME..., --all or --list", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        try:
            path = weights.resolve(name, progress=not args.no_progress)
        except weights.WeightsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{name}: {path}")
        print(f"  {weights.describe(name)}")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codeformer", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_download(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

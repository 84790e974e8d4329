"""Command line: `codeformer restore | convert | download | train | codes | prepare-faces`.

This module only parses arguments and calls the library. Each subcommand has an `_add_<name>` function that
declares its arguments and a `_run_<name>` function that calls the library and returns an exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codeformer", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    del sub  # subcommands are added below as they land
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

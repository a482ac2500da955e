"""`autoresearch` / `python -m autoresearch_kernel`: thin sub-commands over the package's functions.

Each sub-command parses its options and calls one function; no logic lives here. Errors the user can
cause (`AutoresearchError`) print as one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys

from autoresearch_kernel.errors import AutoresearchError


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        default=None,
        help="prepared data folder (default: $AUTORESEARCH_DATA_DIR or ~/.cache/autoresearch_kernel)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoresearch", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prepare = commands.add_parser("prepare", help="prepare data and tokenizer (one time)")
    prepare.add_argument("--source", default="embedded", help="embedded | climbmix | PATH to a folder")
    prepare.add_argument("--profile", default="cpu", help="cpu | gpu")
    prepare.add_argument("--num-shards", type=int, default=10, help="climbmix training shards")
    prepare.add_argument("--base-url", default=None, help="climbmix download base URL (mirrors, tests)")
    _add_data_dir(prepare)
    prepare.set_defaults(handler=_prepare)
    return parser


def _prepare(args: argparse.Namespace) -> None:
    from autoresearch_kernel.harness.prepare import prepare

    manifest = prepare(
        source=args.source,
        profile=args.profile,
        data_dir=args.data_dir,
        num_shards=args.num_shards,
        base_url=args.base_url,
    )
    print(manifest.summary_line())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except AutoresearchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0

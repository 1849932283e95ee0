"""`imgclass <command>`: the library's entry points for people (DVC stages call the same functions)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_validate(args: argparse.Namespace) -> int:
    from imgclass import files, images
    from imgclass.params import ValidateParams, load_params

    cfg = load_params(args.params).validate if args.params else ValidateParams()
    try:
        summary = images.validate_tree(Path(args.src), Path(args.dest), cfg)
    except (FileNotFoundError, images.NoImagesAccepted) as exc:
        print(f"imgclass validate: {exc}", file=sys.stderr)
        return 1
    if args.summary:
        files.write_json(args.summary, summary)
    print(f"{args.dest}/report.csv: {summary}")
    return 0


def cmd_check_params(args: argparse.Namespace) -> int:
    from imgclass.params import ParamsError, load_params

    try:
        params = load_params(args.params)
    except ParamsError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{args.params}: ok ({len(params.classes)} classes, models: {', '.join(params.models)})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgclass", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="decode and clean a tree of class folders; report every file")
    p.add_argument("src", help="folder with one sub-folder per class")
    p.add_argument("dest", help="where clean PNGs, _rejected/ and report.csv go")
    p.add_argument("--params", help="read the validate section of this params.yaml (default: built-in defaults)")
    p.add_argument("--summary", help="also write the summary as JSON here")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("check-params", help="validate params.yaml and report the first bad key")
    p.add_argument("params", nargs="?", default="params.yaml")
    p.set_defaults(func=cmd_check_params)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""The ``auth-service-client`` command: ``ssot-check PATH... [--allow FILE]``.

Exit status: 0 when nothing bypasses the source of truth, 1 when something does (each finding
printed as ``path:line:col: CODE message``), 2 on a usage error."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from auth_service_client.ssot import ALLOW_FILE, CODES, AllowList, AllowListError, check_paths


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auth-service-client")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    codes = "; ".join(f"{code} {text}" for code, text in CODES.items())
    check = commands.add_parser(
        "ssot-check",
        help="list the code that checks or makes JWTs itself instead of using the auth service",
        description=f"Walk the Python files under PATH and list what bypasses the single source "
        f"of truth for tokens. Codes: {codes}.",
    )
    check.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    check.add_argument(
        "--allow",
        type=Path,
        metavar="FILE",
        help=f"the exceptions, lines `path[:line] [CODE ...]` (# comments; path globs relative "
        f"to the file's directory); default: ./{ALLOW_FILE} if present",
    )
    return parser


def ssot_check(paths: Sequence[Path], allow: Path | None) -> int:
    """Print the findings not allowed; the exit status."""
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        print(f"ssot-check: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    if allow is None and Path(ALLOW_FILE).is_file():
        allow = Path(ALLOW_FILE)
    allowed = None
    if allow is not None:
        try:
            allowed = AllowList.read(allow)
        except (OSError, UnicodeDecodeError, AllowListError) as exc:
            print(f"ssot-check: bad allow-list: {exc}", file=sys.stderr)
            return 2
    findings = [f for f in check_paths(paths) if allowed is None or not allowed.allows(f)]
    for finding in findings:
        print(finding)
    if findings:
        print(f"ssot-check: {len(findings)} finding(s)", file=sys.stderr)
    return 1 if findings else 0


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: ``auth-service-client ssot-check PATH...``."""
    args = _parser().parse_args(argv)
    if args.command == "ssot-check":
        return ssot_check(args.paths, args.allow)
    return 2  # pragma: no cover - argparse refuses other commands


if __name__ == "__main__":
    sys.exit(main())

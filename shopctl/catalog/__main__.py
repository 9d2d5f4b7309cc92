"""`python -m shopctl.catalog generate|check`: the Makefile's `schemas` and `schemas-check`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from shopctl.catalog.release import check, generate, stale
from shopctl.catalog.schemas import Catalog, CatalogError

FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shopctl.catalog",
        description="Generate the event catalog from shared/contracts, or check the models against the "
        "released schemas. Run from the repository's root.",
    )
    parser.add_argument(
        "action", choices=["generate", "check"], help="generate: `make schemas`; check: `make schemas-check`"
    )
    parser.add_argument(
        "--schemas", type=Path, default=Path("schemas"), help="the schema directory (default: schemas)"
    )
    parser.add_argument(
        "--docs", type=Path, default=Path("docs/events.md"), help="the page holding the generated catalog"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        catalog = Catalog.of_platform()
        if args.action == "generate":
            written = generate(catalog, args.schemas, args.docs)
            sys.stdout.write("".join(f"wrote {path}\n" for path in written) or "the catalog was up to date\n")
            return 0
        problems = check(catalog, args.schemas)
        notices = [] if problems else stale(catalog, args.schemas, args.docs)
    except CatalogError as error:
        problems, notices = error.problems, []
    if problems:
        sys.stderr.write("".join(f"schemas-check: {problem}\n" for problem in problems))
        return FAILED
    sys.stdout.write("".join(f"schemas-check: note: {notice}\n" for notice in notices))
    sys.stdout.write(
        f"schemas-check: {len(catalog.events)} event types are compatible with the released schemas"
        + ("" if notices else f"; {args.schemas}/ and {args.docs} are up to date")
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

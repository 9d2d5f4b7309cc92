"""`shopctl token`: a signed platform token for local use and tests.

The token is signed with AUTH_SIGNING_KEY from the environment, as the services verify it, and is the
last line of stdout so that scripts can take it with `| tail -n 1`. In production tokens come from
`POST /v1/auth/token` or the operator's identity provider, never from a key on a command line, so
the command refuses to run with ENVIRONMENT=prod.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from datetime import timedelta

from shared.auth import Principal, Role, TokenIssuer
from shared.clock import utc_now
from shared.settings import Environment, SharedSettings, load_settings

USAGE_ERROR = 2
MAX_TTL_S = 365 * 24 * 3600
ROLES = [Role.CUSTOMER.value, Role.MERCHANT.value, Role.ADMIN.value]
_SUBJECT = re.compile(r"[A-Za-z0-9_.:@\-]{1,128}")


def _subject(text: str) -> str:
    if _SUBJECT.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an id: use 1 to 128 letters, digits and _ . : @ -")
    return text


def _ttl(text: str) -> int:
    try:
        seconds = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if not 1 <= seconds <= MAX_TTL_S:
        raise argparse.ArgumentTypeError(f"give 1 to {MAX_TTL_S} seconds (a year), not {seconds}")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shopctl",
        description="Command line tools for the order platform's local stack and tests.",
        epilog="Run `shopctl <command> --help` for a command's options.",
    )
    commands = parser.add_subparsers(dest="command", metavar="<command>")
    token = commands.add_parser(
        "token",
        help="print a signed platform token (the last line of stdout)",
        description="Print a bearer token signed with AUTH_SIGNING_KEY (and carrying AUTH_ISSUER and "
        "AUTH_AUDIENCE) from the environment, so give it the same values as the services. The token "
        "is the last line of stdout; a line saying what it is goes to stderr. Refused with "
        "ENVIRONMENT=prod.",
        epilog="examples:\n"
        "  shopctl token --role customer --subject cust-1\n"
        "  shopctl token --role merchant --subject m-tea          # acts for merchant m-tea\n"
        "  shopctl token --role admin --subject ops --ttl-s 600\n"
        '  curl -H "Authorization: Bearer $(shopctl token --role admin --subject ops | tail -n 1)" ...',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    token.set_defaults(parser=token)
    token.add_argument("--role", required=True, choices=ROLES, help="what the token may do")
    token.add_argument(
        "--subject",
        required=True,
        type=_subject,
        help="who the token is for: a customer, merchant or admin id",
    )
    token.add_argument(
        "--merchant-id",
        type=_subject,
        help="the merchant a merchant token acts for (default: the subject); merchant tokens only",
    )
    token.add_argument(
        "--ttl-s",
        type=_ttl,
        metavar="SECONDS",
        help="how long the token lives (default: AUTH_ACCESS_TOKEN_TTL_S, one hour unless set)",
    )
    return parser


def _environment_asked_for() -> str:
    """ENVIRONMENT as pydantic-settings reads it (names in any case), before the settings are loaded:
    prod settings may be incomplete here, and the refusal should say why it refuses."""
    for name, value in os.environ.items():
        if name.lower() == "environment":
            return value.strip().lower()
    return ""


def _refuse_prod() -> int:
    sys.stderr.write(
        "shopctl token refuses to run with ENVIRONMENT=prod: production tokens come from "
        "POST /v1/auth/token or the operator's identity provider, not from the signing key\n"
    )
    return USAGE_ERROR


def issue_token(args: argparse.Namespace) -> int:
    role = Role(args.role)
    if args.merchant_id is not None and role is not Role.MERCHANT:
        args.parser.error(f"--merchant-id is for merchant tokens, not {role.value} tokens")
    if _environment_asked_for() == Environment.PROD.value:
        return _refuse_prod()
    settings = load_settings(SharedSettings)
    merchant_id = (args.merchant_id or args.subject) if role is Role.MERCHANT else None
    issuer = TokenIssuer(settings)
    ttl = issuer.access_ttl if args.ttl_s is None else timedelta(seconds=args.ttl_s)
    token = issuer.access_token(Principal(args.subject, role, merchant_id=merchant_id), ttl=ttl)
    acting = f" acting for merchant {merchant_id}" if merchant_id else ""
    expires = (utc_now() + ttl).strftime("%Y-%m-%d %H:%M:%S UTC")
    sys.stderr.write(
        f"{role.value} token for {args.subject}{acting}, valid until {expires} "
        f"(ENVIRONMENT={settings.environment.value}); send it as `Authorization: Bearer <token>`\n"
    )
    sys.stdout.write(f"{token}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "token":
        return issue_token(args)
    parser.print_help(sys.stderr)
    return USAGE_ERROR

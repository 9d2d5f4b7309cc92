"""`shopctl token`: a signed platform token for local use and tests; `shopctl events`: the analysts'
tools to tail, replay and export the event streams (shopctl/streams.py does their work); `shopctl
keys`: fresh keys for the settings that seal data (PII_ENCRYPTION_KEYS, PII_INDEX_KEY, the payment
token key pair).

The token is signed with AUTH_SIGNING_KEY from the environment, as the services verify it, and is the
last line of stdout so that scripts can take it with `| tail -n 1`. In production tokens come from
`POST /v1/auth/token` or the operator's identity provider, never from a key on a command line, so
the command refuses to run with ENVIRONMENT=prod.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from collections.abc import Coroutine, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

from shared.auth import Principal, Role, TokenIssuer
from shared.clock import utc_now
from shared.contracts import topics
from shared.crypto import KEY_ID, generate_index_key, generate_pii_key, generate_token_keypair
from shared.settings import Environment, SharedSettings, load_settings
from shopctl import streams
from shopctl.events import (
    TOPIC_NAME,
    Selection,
    Window,
    check_sandbox_prefix,
    format_time,
    parse_time,
    replay_refusal,
)

USAGE_ERROR = 2
FAILURE = 1
MAX_TTL_S = 365 * 24 * 3600
ROLES = [Role.CUSTOMER.value, Role.MERCHANT.value, Role.ADMIN.value, Role.ANALYST.value]
_SUBJECT = re.compile(r"[A-Za-z0-9_.:@\-]{1,128}")


class _WithExamples(argparse.HelpFormatter):
    """Wraps a description to the terminal as usual, but keeps the lines of an examples epilog."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


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
        "  shopctl token --role analyst --subject data-team      # reads the event streams\n"
        '  curl -H "Authorization: Bearer $(shopctl token --role admin --subject ops | tail -n 1)" ...',
        formatter_class=_WithExamples,
    )
    token.set_defaults(parser=token)
    token.add_argument("--role", required=True, choices=ROLES, help="what the token may do")
    token.add_argument(
        "--subject",
        required=True,
        type=_subject,
        help="who the token is for: a customer, merchant, admin or analyst id",
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
    _add_events_commands(commands)
    _add_keys_commands(commands)
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


# --- shopctl events ---------------------------------------------------------------------------------

TIME_HELP = "ISO 8601 with a time zone (2026-11-26T09:30:00+08:00, ...Z), `now`, or now-15m, now-2h, now-1d"


def _time(text: str) -> datetime:
    try:
        return parse_time(text, utc_now())
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _topic(text: str) -> str:
    if TOPIC_NAME.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a topic name: use letters, digits and . _ -")
    return text


def _positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"give 1 or more, not {number}")
    return number


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < seconds <= MAX_TTL_S:
        raise argparse.ArgumentTypeError(f"give more than 0 and at most {MAX_TTL_S} seconds, not {text}")
    return seconds


def _add_events_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    broker = argparse.ArgumentParser(add_help=False)
    broker.add_argument(
        "--bootstrap",
        metavar="HOST:PORT[,...]",
        help="the Kafka brokers (default: KAFKA_BOOTSTRAP_SERVERS, as the services read it)",
    )
    privacy = argparse.ArgumentParser(add_help=False)
    privacy.add_argument(
        "--personal-data",
        action="store_true",
        help="keep names, phones, street addresses and payment tokens (default: the analysts' view, as "
        "the gateway's live stream gives it: an address cut to province, city and district, no token); "
        "only where you may hold personal data",
    )
    window = argparse.ArgumentParser(add_help=False)
    window.add_argument("--from", dest="start", required=True, type=_time, metavar="TIME", help=TIME_HELP)
    window.add_argument(
        "--to", dest="end", required=True, type=_time, metavar="TIME", help="the end, left out: " + TIME_HELP
    )
    events = commands.add_parser(
        "events",
        help="tail, replay and export the event streams (for analysts)",
        description="Read the platform's event topics without disturbing the services: every read uses "
        "its own consumer with no consumer group and commits nothing.",
        epilog="Run `shopctl events <action> --help` for an action's options.",
    )
    events.set_defaults(parser=events)
    actions = events.add_subparsers(dest="action", metavar="<action>")

    tail = actions.add_parser(
        "tail",
        parents=[broker, privacy],
        help="pretty-print a topic's events as they arrive",
        description="Print each event of TOPIC as it arrives: its time, type and version, subject (the "
        "order id), source, correlation id, then its payload as indented JSON. Records that are not "
        "events (garbage on a dead-letter topic) are shown as such. Personal data is cut unless "
        "--personal-data is given. Ctrl-C stops it.",
        epilog="examples:\n"
        "  shopctl events tail order.events\n"
        "  shopctl events tail order.events --from-beginning --order 3f0c... --idle-exit 3\n"
        "  shopctl events tail payment.events --type 'payment.*' --max 10\n"
        "  shopctl events tail order.events.dlq --from-beginning     # dead letters and why",
        formatter_class=_WithExamples,
    )
    tail.set_defaults(parser=tail)
    tail.add_argument("topic", type=_topic, metavar="TOPIC", help="the topic, e.g. order.events")
    tail.add_argument(
        "--type",
        dest="types",
        action="append",
        default=[],
        metavar="T",
        help="only events of this type, e.g. order.placed or 'order.*' (repeat for more)",
    )
    tail.add_argument("--order", dest="order_id", metavar="ID", help="only this order's events")
    tail.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the oldest record kept (default: only events that arrive from now on)",
    )
    tail.add_argument("--max", dest="max_events", type=_positive_int, metavar="N", help="stop after N events")
    tail.add_argument(
        "--idle-exit",
        dest="idle_exit_s",
        type=_seconds,
        metavar="S",
        help="stop once no record has arrived for S seconds",
    )

    replay = actions.add_parser(
        "replay",
        parents=[broker, window],
        help="copy a time range of a topic into a sandbox topic",
        description="Copy the records of --topic whose event time lies in [--from, --to) into a sandbox "
        "topic for an analyst's job, each with its key, value, headers and timestamp, created with as "
        "many partitions if it does not exist (an existing one is appended to). Refused for any "
        "topic the services consume or own: only topics named with the sandbox prefix are allowed.",
        epilog="examples:\n"
        "  shopctl events replay --from now-1h --to now --into sandbox.revenue-test\n"
        "  shopctl events replay --topic payment.events --from 2026-11-26T00:00:00+08:00 \\\n"
        "      --to 2026-11-27T00:00:00+08:00 --into sandbox.payments-nov-26",
        formatter_class=_WithExamples,
    )
    replay.set_defaults(parser=replay)
    replay.add_argument(
        "--topic", default=topics.ORDER_EVENTS, type=_topic, help="the topic to copy (default: order.events)"
    )
    replay.add_argument("--into", required=True, metavar="TOPIC", help="the sandbox topic to copy into")
    replay.add_argument(
        "--sandbox-prefix",
        metavar="PREFIX",
        help="the prefix a sandbox topic's name starts with (default: EVENTS_SANDBOX_PREFIX, or sandbox.)",
    )

    export = actions.add_parser(
        "export",
        parents=[broker, window, privacy],
        help="write a time range of events to a Parquet or JSON Lines file",
        description="Write the events whose time lies in [--from, --to) to OUT: one column per envelope "
        "attribute (id, type, version, source, time, subject, correlation_id, causation_id), the "
        "payload as JSON text in `data`, then topic, partition and offset. In JSON Lines `data` is an "
        "object. Personal data is cut unless --personal-data is given. Records published after the "
        "export started, and records that are not events, are left out. OUT appears only once the "
        "export is complete, readable by its owner only.",
        epilog="examples:\n"
        "  shopctl events export --from now-1d --to now --format parquet orders.parquet\n"
        "  shopctl events export --from now-1h --to now --topic order.events --topic payment.events \\\n"
        "      out.jsonl\n"
        "  shopctl events export --from now-10m --to now --format jsonl - | jq .type\n"
        "  python -c \"import pandas; print(pandas.read_parquet('orders.parquet'))\"",
        formatter_class=_WithExamples,
    )
    export.set_defaults(parser=export)
    export.add_argument(
        "--topic",
        dest="topics",
        action="append",
        type=_topic,
        metavar="TOPIC",
        help="a topic to export (repeat for more; default: order.events)",
    )
    export.add_argument(
        "--format",
        choices=["parquet", "jsonl"],
        help="the file format (default: from OUT's suffix, .parquet or .jsonl; jsonl for -)",
    )
    export.add_argument("out", metavar="OUT", help="the file to write, or - for JSON Lines on stdout")


def _window(args: argparse.Namespace) -> Window:
    parser: argparse.ArgumentParser = args.parser
    try:
        return Window(args.start, args.end)
    except ValueError as error:
        parser.error(str(error))


def _export_format(args: argparse.Namespace) -> streams.Format:
    parser: argparse.ArgumentParser = args.parser
    if args.format is not None:
        return "parquet" if args.format == "parquet" else "jsonl"
    if args.out == "-":
        return "jsonl"  # the one format stdout takes
    suffix = Path(args.out).suffix.lower()
    if suffix in {".parquet", ".pq"}:
        return "parquet"
    if suffix in {".jsonl", ".ndjson"}:
        return "jsonl"
    parser.error(f"give --format parquet or --format jsonl: {args.out!r} does not say which")


def _export_target(args: argparse.Namespace) -> tuple[streams.Format, str]:
    parser: argparse.ArgumentParser = args.parser
    fmt = _export_format(args)
    if args.out == "-" and fmt != "jsonl":
        parser.error("only jsonl can go to stdout (-): give parquet a file name")
    return fmt, args.out


def _emit(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()  # shown at once, also when piped into grep or less


async def _tail(args: argparse.Namespace, bootstrap: str) -> int:
    await streams.tail(
        bootstrap,
        args.topic,
        Selection(types=tuple(args.types), order_id=args.order_id),
        emit=_emit,
        from_beginning=args.from_beginning,
        max_events=args.max_events,
        idle_exit_s=args.idle_exit_s,
        personal_data=args.personal_data,
    )
    return 0


def _replay_target(args: argparse.Namespace, settings: streams.EventToolSettings) -> str | None:
    """Why the replay may not run, or None."""
    prefix = args.sandbox_prefix if args.sandbox_prefix is not None else settings.events_sandbox_prefix
    try:
        check_sandbox_prefix(prefix)
    except ValueError as error:
        return str(error)
    return replay_refusal(args.into, source=args.topic, sandbox_prefix=prefix)


async def _replay(args: argparse.Namespace, bootstrap: str, window: Window) -> int:
    report = await streams.replay(bootstrap, args.topic, window, args.into)
    created = f"new topic, {report.partitions} partitions" if report.created else "existing topic"
    sys.stdout.write(
        f"copied {report.copied} records of {args.topic} from {window} into {args.into} ({created})\n"
    )
    return 0


async def _export(
    args: argparse.Namespace, bootstrap: str, window: Window, fmt: streams.Format, out: str
) -> int:
    chosen = args.topics or [topics.ORDER_EVENTS]
    report = await streams.export(bootstrap, chosen, window, fmt, out, personal_data=args.personal_data)
    where_to = "stdout" if out == "-" else out
    sys.stderr.write(f"wrote {report.rows} events of {', '.join(chosen)} from {window} to {where_to}\n")
    if report.skipped:
        shown = ", ".join(report.skipped[:10]) + (" ..." if len(report.skipped) > 10 else "")
        sys.stderr.write(f"left out {len(report.skipped)} records that are not events: {shown}\n")
    return 0


def run_events(args: argparse.Namespace) -> int:
    if args.action is None:
        args.parser.print_help(sys.stderr)
        return USAGE_ERROR
    settings = streams.EventToolSettings()
    bootstrap = args.bootstrap or settings.kafka_bootstrap_servers
    # Everything wrong with the arguments is said before the broker is contacted.
    work: Coroutine[Any, Any, int]
    if args.action == "tail":
        work = _tail(args, bootstrap)
    elif args.action == "replay":
        refusal = _replay_target(args, settings)
        if refusal is not None:
            sys.stderr.write(f"shopctl events replay refuses to write into {args.into}: {refusal}\n")
            return USAGE_ERROR
        work = _replay(args, bootstrap, _window(args))
    else:
        window = _window(args)
        work = _export(args, bootstrap, window, *_export_target(args))
    # aiokafka logs each failed connection attempt; the one line below says what went wrong instead.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(work)
    except KeyboardInterrupt:
        # Stopping a tail is how it ends; a replay or export stopped halfway is not a success.
        if args.action == "tail":
            return 0
        sys.stderr.write(f"shopctl events {args.action} interrupted at {format_time(utc_now())}\n")
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except streams.ToolError as error:
        sys.stderr.write(f"shopctl events {args.action}: {error}\n")
        return FAILURE
    except KafkaError as error:
        # aiokafka's errors name themselves: "KafkaConnectionError: Unable to bootstrap from [...]".
        sys.stderr.write(f"shopctl events {args.action}: the Kafka broker at {bootstrap}: {error}\n")
        return FAILURE
    except OSError as error:
        sys.stderr.write(f"shopctl events {args.action}: {error}\n")
        return FAILURE


# --- shopctl keys -----------------------------------------------------------------------------------


def _key_id(text: str) -> str:
    if KEY_ID.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a key id: use 1 to 32 letters, digits, _ and -")
    return text


def _add_keys_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser(
        "keys",
        help="print fresh keys for the settings that seal data",
        description="Print freshly generated keys for the platform's settings, one per line on stdout "
        "(what to do with them goes to stderr). Nothing is stored or sent anywhere: put them in the "
        "secret store yourself. Works in any ENVIRONMENT, since this is how production keys are made.",
        epilog="Run `shopctl keys <kind> --help` for a kind's options.",
    )
    keys.set_defaults(parser=keys)
    kinds = keys.add_subparsers(dest="kind", metavar="<kind>")

    pii = kinds.add_parser(
        "pii",
        help="a PII_ENCRYPTION_KEYS entry (kid:key)",
        description="Print a new PII_ENCRYPTION_KEYS entry, `kid:key`: a 32-byte AES-256-GCM key in "
        "base64url under a key id that every value it seals carries. To rotate, put the new entry "
        "first (it seals from then on) and keep the old ones after it until every value they sealed "
        "has been sealed again.",
        epilog="examples:\n"
        "  shopctl keys pii\n"
        "  shopctl keys pii --kid 2026-11\n"
        '  PII_ENCRYPTION_KEYS="$(shopctl keys pii),$PII_ENCRYPTION_KEYS"     # rotate',
        formatter_class=_WithExamples,
    )
    pii.set_defaults(parser=pii)
    pii.add_argument(
        "--kid", type=_key_id, help="the key id: 1 to 32 letters, digits, _ and - (default: a random one)"
    )

    index = kinds.add_parser(
        "pii-index",
        help="a PII_INDEX_KEY",
        description="Print a new PII_INDEX_KEY: the 32-byte key of the blind indexes that find records by "
        "a personal value. Set it once and keep it: a new one orphans every stored index.",
    )
    index.set_defaults(parser=index)

    token = kinds.add_parser(
        "payment-token",
        help="a PAYMENT_TOKEN_PRIVATE_KEY / PAYMENT_TOKEN_PUBLIC_KEY pair",
        description="Print a new X25519 key pair for sealing the payment provider token as two "
        "NAME=value lines. The private key belongs in the payment service's secret only; the public "
        "key is configuration every service may read (the gateway seals with it).",
    )
    token.set_defaults(parser=token)


def print_keys(args: argparse.Namespace) -> int:
    if args.kind is None:
        args.parser.print_help(sys.stderr)
        return USAGE_ERROR
    if args.kind == "pii":
        sys.stderr.write(
            "a new PII_ENCRYPTION_KEYS entry: put it first to seal with it, keep the older entries after it\n"
        )
        sys.stdout.write(f"{generate_pii_key(args.kid)}\n")
    elif args.kind == "pii-index":
        sys.stderr.write("a new PII_INDEX_KEY: changing it orphans every stored blind index\n")
        sys.stdout.write(f"{generate_index_key()}\n")
    else:
        private, public = generate_token_keypair()
        sys.stderr.write(
            "a new payment token key pair: the private key goes to the payment service's secret only, "
            "the public key to every service's configuration\n"
        )
        sys.stdout.write(f"PAYMENT_TOKEN_PRIVATE_KEY={private}\nPAYMENT_TOKEN_PUBLIC_KEY={public}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "token":
        return issue_token(args)
    if args.command == "events":
        return run_events(args)
    if args.command == "keys":
        return print_keys(args)
    parser.print_help(sys.stderr)
    return USAGE_ERROR

"""``chatcap keys create|list|revoke|top-up|usage``: manage API keys in the gateway database.

Usage::

    chatcap keys --data-dir /var/lib/chatcap create alice --credit 5 --rpm 60 --tpm 20000
    chatcap keys --database-url postgresql://chatcap@db/chatcap list
    chatcap keys top-up key_0123456789ab 2.50
    chatcap keys revoke key_0123456789ab
    chatcap keys usage                       # requests, tokens and spend per key and model
    chatcap keys usage key_0123456789ab --since 7d --json

``create`` prints the secret once, on stdout; nothing else ever shows it. The database is
``--database-url`` (``CHATCAP_DATABASE_URL``), else ``<--data-dir>/chatcap.db``
(``CHATCAP_DATA_DIR``); running servers (every replica) see the changes on their next request.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from mcp_server.gateway.records import KeyRecord, micros_to_usd

if TYPE_CHECKING:  # loaded by run_keys: the server's own start-up needs no SQLAlchemy
    from mcp_server.gateway.keys import KeyStore
    from mcp_server.gateway.usage import UsageTotal

__all__ = ["add_command", "add_keys_parser", "run_keys"]


def add_keys_parser(commands, data_dir_default: str | None, database_url_default: str | None = None) -> None:
    """Add the ``keys`` sub-command to the main parser's sub-parsers.

    Args:
        commands: the object ``add_subparsers`` returned.
        data_dir_default: the ``--data-dir`` default (from the environment), or None.
        database_url_default: the ``--database-url`` default (from the environment), or None.
    """
    keys = add_command(commands, "keys", "manage API keys, credit and limits", "keys --data-dir /var/lib/chatcap list")
    keys.add_argument(
        "--data-dir", default=data_dir_default,
        help=f"the gateway's data directory (default: {data_dir_default or 'none'}; env CHATCAP_DATA_DIR)",
    )  # fmt: skip
    keys.add_argument(
        "--database-url", default=database_url_default,
        help="the gateway's database (postgresql://...) instead of the data directory's "
        f"(default: {'set' if database_url_default else 'none'}; env CHATCAP_DATABASE_URL)",
    )  # fmt: skip
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = add_command(actions, "create", "create a key and print its secret once", "keys create alice --credit 5 --rpm 60")
    create.add_argument("name", help="a label for the key")
    create.add_argument("--credit", default="0", help="initial credit in USD (default: 0)")
    create.add_argument("--rpm", type=int, help="requests per minute (default: no limit)")
    create.add_argument("--tpm", type=int, help="tokens per minute (default: no limit)")
    add_command(actions, "list", "list keys with balance and limits", "keys list")
    revoke = add_command(actions, "revoke", "revoke a key", "keys revoke key_0123456789ab")
    revoke.add_argument("key_id", help="the key's id (key_...), as `keys list` shows it")
    top_up = add_command(actions, "top-up", "add credit to a key", "keys top-up key_0123456789ab 2.50")
    top_up.add_argument("key_id", help="the key's id (key_...), as `keys list` shows it")
    top_up.add_argument("amount", help="USD to add")
    usage = add_command(actions, "usage", "requests, tokens and spend per key and model, from the ledger",
                        "keys usage key_0123456789ab --since 7d")
    usage.add_argument("key_id", nargs="?", help="only this key (default: every key, and requests without one)")
    usage.add_argument("--since", type=_since, metavar="WHEN",
                       help="only requests from then on: a date or time in ISO 8601 (UTC unless it names "
                            "an offset: 2026-12-01, 2026-12-01T09:30) or a span back from now (30m, 24h, 7d); "
                            "default: all")
    usage.add_argument("--json", action="store_true", help="print JSON, one object per key and model (default: a table)")


_SPAN = re.compile(r"^(\d+)([smhd])$")
_SPAN_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _since(text: str) -> float:
    """``--since``: a span back from now (``7d``) or an ISO 8601 date or time (naive: UTC), as Unix seconds.

    Raises:
        argparse.ArgumentTypeError: neither.
    """
    span = _SPAN.match(text.strip())
    if span:
        return time.time() - int(span[1]) * _SPAN_SECONDS[span[2]]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO 8601 date or time (2026-12-01, 2026-12-01T09:30) nor a span (30m, 24h, 7d)"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def add_command(commands, name: str, help: str, example: str) -> argparse.ArgumentParser:
    """Add a sub-command whose ``--help`` states what it does and ends with one example.

    Args:
        commands: the object ``add_subparsers`` returned.
        name, help: the command and its one-line help.
        example: a command line, without the leading ``chatcap``.
    """
    return commands.add_parser(
        name, help=help, description=help[0].upper() + help[1:] + ".", epilog=f"example:\n  chatcap {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip


def _row(key: KeyRecord) -> str:
    limits = f"rpm={key.rpm or '-'} tpm={key.tpm or '-'}"
    state = "active" if key.active else "revoked"
    return f"{key.id}  {key.prefix}...  {state:7}  ${micros_to_usd(key.balance_micros):<12}  {limits}  {key.name}"


def _usage_table(totals: list[UsageTotal], names: dict[str, str]) -> str:
    head = ("key", "name", "model", "requests", "completed", "cancelled", "failed", "prompt_tokens",
            "completion_tokens", "spend_usd")
    lines = [head] + [
        (t.key_id or "(no key)", names.get(t.key_id or "", "-"), t.model,
         *(str(n) for n in (t.requests, t.completed, t.cancelled, t.failed, t.prompt_tokens, t.completion_tokens)),
         str(micros_to_usd(t.cost_micros)))
        for t in totals
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def _print_usage(store: KeyStore, args: argparse.Namespace) -> None:
    from mcp_server.gateway.usage import query_usage

    if args.key_id is not None:
        store.get(args.key_id)  # an unknown key id is an error, not an empty report
    totals = query_usage(store.db, args.key_id, args.since)
    if args.json:
        print(json.dumps([{**asdict(t), "spend_usd": str(micros_to_usd(t.cost_micros))} for t in totals], indent=2))
    elif totals:
        print(_usage_table(totals, {key.id: key.name for key in store.list()}))
    else:
        print("no requests recorded" + (" for this key" if args.key_id else "") + (" in that time" if args.since else ""))


def run_keys(args: argparse.Namespace) -> int:
    """Run a ``keys`` action; returns the exit status.

    A data directory that is not a directory, or that ``list`` or ``usage`` does not find (a
    read creates nothing), or a database that cannot be opened, ends with a message on stderr
    and status 2.

    Raises:
        InvalidRequest: an unknown key id, an empty name or a bad amount (the caller prints it).
    """
    if not args.data_dir and not args.database_url:
        print("chatcap keys: set --data-dir (CHATCAP_DATA_DIR) or --database-url (CHATCAP_DATABASE_URL)",
              file=sys.stderr)
        return 2
    from sqlalchemy.exc import SQLAlchemyError

    from mcp_server.gateway.db import Database
    from mcp_server.gateway.keys import KeyStore

    try:
        db = Database.open(Path(args.data_dir) if args.data_dir else None, url=args.database_url,
                           create=args.keys_command not in ("list", "usage"))
    except (OSError, ValueError, RuntimeError, SQLAlchemyError) as exc:
        print(f"chatcap keys: {exc}", file=sys.stderr)
        return 2
    store = KeyStore(db)
    try:
        if args.keys_command == "create":
            key, secret = store.create(args.name, args.credit, args.rpm, args.tpm)
            print(_row(key), file=sys.stderr)
            print(secret)
        elif args.keys_command == "list":
            for key in store.list():
                print(_row(key))
        elif args.keys_command == "revoke":
            print(_row(store.revoke(args.key_id)))
        elif args.keys_command == "usage":
            _print_usage(store, args)
        else:
            print(_row(store.top_up(args.key_id, args.amount)))
    finally:
        db.close()
    return 0

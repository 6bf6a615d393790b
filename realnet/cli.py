"""``storelab``: the command-line tool (console script ``storelab = realnet.cli:main``).

Theory of operation
-------------------
One argparse parser with a subcommand per verb, in the spirit of ``redis-cli``:

- ``storelab keyslot KEY ...`` prints each key's hash slot, one per line (``CLUSTER KEYSLOT``);
  computed locally, no node needed.
- ``storelab get KEY [--node HOST:PORT]`` prints the value to stdout as raw bytes (no newline
  added), ``storelab set KEY VALUE`` (``VALUE`` ``-`` reads stdin) and ``storelab del KEY`` talk
  to one node's HTTP API (default ``127.0.0.1:7000``); that node forwards to the key's owner, so
  any node will do.

Exit status: 0 on success, 1 when the key was not found (get, del), 2 on any error, with the
error's sentence on stderr (a refused connection included: a sentence, not a traceback). Keys and
values given on the command line are taken as the bytes the shell passed
(:func:`os.fsencode`), so non-UTF-8 keys survive.

``storelab cluster ...`` (create, check, reshard, ...) is a later issue; :func:`build_parser`
keeps one subparsers object so it slots in next to the key commands.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
from collections.abc import Sequence

from kvcore import errors
from kvcore.config import parse_addr
from kvcore.slots import key_slot
from realnet.client import DEFAULT_NODE, NodeConnection, error_from_response, kv_path

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_ERROR = 2


def _node_arg(text: str) -> str:
    try:
        parse_addr(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="storelab",
        description="storelab: talk to a storelab node, compute key slots.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ks = sub.add_parser("keyslot", help="print the hash slot of each key")
    ks.add_argument("keys", nargs="+", metavar="KEY")

    def with_node(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--node",
            type=_node_arg,
            default=DEFAULT_NODE,
            metavar="HOST:PORT",
            help=f"the node to ask (its client HTTP address; default {DEFAULT_NODE})",
        )
        sp.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")

    g = sub.add_parser("get", help="print a key's value (exit 1 if absent)")
    g.add_argument("key", metavar="KEY")
    with_node(g)

    s = sub.add_parser("set", help="set a key (VALUE '-' reads stdin)")
    s.add_argument("key", metavar="KEY")
    s.add_argument("value", metavar="VALUE")
    with_node(s)

    d = sub.add_parser("del", help="delete a key (exit 1 if absent)")
    d.add_argument("key", metavar="KEY")
    with_node(d)
    return p


def _keyslot(keys: Sequence[str]) -> int:
    out = sys.stdout
    for k in keys:
        out.write(f"{key_slot(os.fsencode(k))}\n")
    out.flush()
    return EXIT_OK


def _kv(args: argparse.Namespace) -> int:
    key = os.fsencode(args.key)
    if not key:
        print("storelab: the key must not be empty.", file=sys.stderr)
        return EXIT_ERROR
    body: bytes | None = None
    method = {"get": "GET", "set": "PUT", "del": "DELETE"}[args.command]
    if args.command == "set":
        body = sys.stdin.buffer.read() if args.value == "-" else os.fsencode(args.value)
    conn = NodeConnection(args.node, timeout=args.timeout)
    try:
        status, _, data = conn.request(method, kv_path(key), body)
    except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out, garbled
        reason = e.strerror if isinstance(e, OSError) and e.strerror else (str(e) or type(e).__name__)
        print(f"storelab: cannot reach node {args.node}: {reason}.", file=sys.stderr)
        return EXIT_ERROR
    finally:
        conn.close()
    if 200 <= status < 300:
        if args.command == "get":
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        return EXIT_OK
    err = error_from_response(status, data)
    if isinstance(err, errors.NotFound) and args.command in ("get", "del"):
        return EXIT_NOT_FOUND
    msg = err.message.rstrip(".")
    print(f"storelab: {err.code}: {msg}.", file=sys.stderr)
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2)
        return int(e.code) if isinstance(e.code, int) else EXIT_ERROR
    if args.command == "keyslot":
        return _keyslot(args.keys)
    return _kv(args)


if __name__ == "__main__":
    sys.exit(main())

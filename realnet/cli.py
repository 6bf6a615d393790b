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
- ``storelab --version`` prints the installed distribution's version.

Wherever a node address is taken, ``HOST:PORT`` and ``http://HOST:PORT[/]`` are the same
(:func:`realnet.client.node_addr`); another scheme is refused with a sentence.

Exit status: 0 on success, 1 when the key was not found (get, del), 2 on any error, with the
error's sentence on stderr (a refused connection included: a sentence, not a traceback). Keys and
values given on the command line are taken as the bytes the shell passed
(:func:`os.fsencode`), so non-UTF-8 keys survive.

One voice. Every message on stderr is ``storelab: `` and a sentence that starts with a capital
letter and ends with a period (:func:`error`; sentences that come from a node or from the
planners are put in that form too). The same kind of refusal has the same exit status
everywhere: 1 for an answer that is "no" (a key not found, a cluster command refused, problems
found, declined at the prompt), 2 for a usage error, a node that cannot be reached and a node
that answered an error, 130 when interrupted (Ctrl-C). No command prints a traceback: output
into a closed pipe (``storelab keyslot ... | head -1``) ends the command quietly with status 141
(128 + SIGPIPE, what a shell reports for a program that SIGPIPE stopped), as the Python
documentation's note on SIGPIPE advises (catch ``BrokenPipeError``, point stdout at devnull so
that the flush at exit does not raise again; SIGPIPE itself keeps Python's disposition, since
setting it to the default would kill the process on a peer's closed socket too).

``storelab cluster COMMAND`` administers a cluster: :mod:`realnet.clustercli`. What the
commands share (exit statuses, :func:`error`, :func:`table`, :func:`confirm`) is in
:mod:`realnet.clicommon` and re-exported here.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

from kvcore import errors
from kvcore.slots import key_slot
from realnet.clicommon import (  # noqa: F401  (re-exported: these lived here)
    CLIENT_TOKEN_ENV,
    EXIT_BROKEN_PIPE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    NOT_APPLICABLE,
    UNKNOWN,
    _node_arg,
    _node_ref,
    _node_refs,
    confirm,
    error,
    say,
    seconds,
    sentence,
    table,
    token_from,
)
from realnet.client import DEFAULT_NODE, NodeConnection, error_from_response, kv_path
from realnet.clustercli import (  # noqa: F401  (re-exported: these lived here)
    _CLUSTER_COMMANDS,
    ALIASES,
    _cluster,
    add_cluster_parser,
    cmd_add_node,
    cmd_create,
    cmd_fix,
    cmd_info,
    cmd_members,
    cmd_rebalance,
    cmd_remove_node,
    cmd_reshard,
    cmd_verify,
)


def version() -> str:
    """The installed distribution's version; the source tree's when it is not installed."""
    try:
        return metadata.version("storelab")
    except metadata.PackageNotFoundError:
        return "0+unknown (not installed; run from a source tree)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="storelab",
        description="storelab: talk to a storelab node, compute key slots, administer a cluster.",
        epilog="A node address is HOST:PORT or http://HOST:PORT. Exit status: 0 done, 1 not found "
        "or refused, 2 usage or connection error.",
    )
    p.add_argument("--version", action="version", version=f"storelab {version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ks = sub.add_parser("keyslot", help="print the hash slot of each key")
    ks.add_argument("keys", nargs="+", metavar="KEY")

    def with_node(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--node",
            type=_node_arg,
            default=DEFAULT_NODE,
            metavar="HOST:PORT",
            help=f"the node to ask: its client HTTP address, HOST:PORT or http://HOST:PORT "
            f"(default {DEFAULT_NODE})",
        )
        sp.add_argument("--timeout", type=seconds, default=10.0, metavar="SECONDS",
                        help="per HTTP request (default 10)")
        sp.add_argument("--token-file", metavar="FILE",
                        help="the nodes' client token (--client-token-file of the nodes); default: "
                        "the environment variable STORELAB_CLIENT_TOKEN")

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

    add_cluster_parser(sub)
    return p


def _keyslot(keys: Sequence[str]) -> int:
    out = sys.stdout
    for k in keys:
        out.write(f"{key_slot(os.fsencode(k))}\n")
    out.flush()
    return EXIT_OK


#: the content type of a node's value (``realnet.api.OCTETS``; not imported, which would load the
#: node's whole API into every ``storelab get``)
OCTETS = "application/octet-stream"


def _not_a_node(command: str, status: int, headers: dict[str, str]) -> str:
    """What an answer from something other than a storelab node looks like ("" when it looks
    like a node's): a node answers a get's 200 as ``application/octet-stream``, a set's or a
    del's success as 204, and every error as JSON (another server's 200 page would be printed as
    the value, its 404 page read as "not found")."""
    ctype = headers.get("content-type", "")
    said = f"{status} and {ctype or 'no content type'}"
    media = ctype.split(";", 1)[0].strip().lower()
    if not 200 <= status < 300:
        return "" if media == "application/json" else said
    if command == "get":
        return "" if status == 200 and media == OCTETS else said
    return "" if status == 204 else f"{status}, not 204"


def _kv(args: argparse.Namespace) -> int:
    key = os.fsencode(args.key)
    if not key:
        error("The key must not be empty")
        return EXIT_ERROR
    body: bytes | None = None
    method = {"get": "GET", "set": "PUT", "del": "DELETE"}[args.command]
    if args.command == "set":
        body = sys.stdin.buffer.read() if args.value == "-" else os.fsencode(args.value)
    try:
        token = token_from(args, CLIENT_TOKEN_ENV)
    except ValueError as e:
        error(str(e))
        return EXIT_ERROR
    conn = NodeConnection(args.node, timeout=args.timeout, token=token)
    try:
        status, headers, data = conn.request(method, kv_path(key), body)
    except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out, garbled
        reason = e.strerror if isinstance(e, OSError) and e.strerror else (str(e) or type(e).__name__)
        # the same sentence as storelab cluster's (realnet.admin.Http)
        error(f"Cannot reach node {args.node}: {reason.rstrip('.').lower()}")
        return EXIT_ERROR
    finally:
        conn.close()
    odd = _not_a_node(args.command, status, headers)
    if odd:
        error(f"Node {args.node} answered {method} with {odd}: it does not look like a storelab node's HTTP "
              "address")
        return EXIT_ERROR
    if 200 <= status < 300:
        if args.command == "get":
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        return EXIT_OK
    err = error_from_response(status, data)
    if isinstance(err, errors.NotFound) and args.command in ("get", "del"):
        # the node's sentence names the key ("Key 'nope' not found."): a "no", exit 1
        error(err.message or f"Key {args.key!r} not found")
        return EXIT_NOT_FOUND
    if status == 401:
        error(f"Node {args.node} requires the client token (401 unauthorized): give it with "
              f"{CLIENT_TOKEN_ENV}=TOKEN or --token-file FILE; if you did, it is not the node's")
        return EXIT_ERROR
    said = (err.message or "The node answered an error").rstrip(".")
    error(f"{said} ({status} {err.code} from node {args.node})")
    return EXIT_ERROR


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help or --version (0) or a usage error (2)
        return int(e.code) if isinstance(e.code, int) else EXIT_ERROR
    if args.command == "keyslot":
        return _keyslot(args.keys)
    if args.command == "cluster":
        return _cluster(args)
    return _kv(args)


def quiet_pipe(run: Callable[[], int]) -> int:
    """``run()``, ending quietly when stdout is a closed pipe (``... | head``) or on Ctrl-C.

    The Python documentation's note on SIGPIPE: catch BrokenPipeError, then point stdout at
    devnull, because Python flushes stdout once more at exit and that flush would raise again.
    """
    try:
        status = run()
        sys.stdout.flush()  # a pipe closed after the last write fails here, inside the handler
        return status
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # stdout has no descriptor (a test's capture)
            pass
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    return quiet_pipe(lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())

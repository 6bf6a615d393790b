"""The HTTP side's doors: admin and client tokens, the Host check, and their settings.

Theory of operation
-------------------
Three checks guard a node's HTTP port (issue 10; the peer bus has its own, the cluster secret):

- **The admin token** (``--admin-token-file FILE`` or ``[security] admin_token_file``): every
  ``POST /cluster/...`` must carry ``Authorization: Bearer TOKEN``; otherwise 401
  ``unauthorized`` with a sentence and ``WWW-Authenticate: Bearer`` (RFC 6750 §3). The ``GET``
  views stay open: they show the slot map, members, counters and which slots hold keys, never a
  key or a value, and ``storelab cluster`` and smart clients read them.
- **The client token** (``--client-token-file FILE`` or ``[security] client_token_file``;
  Redis's ``requirepass``): every ``/kv/`` request must carry it the same way. Requests a node
  forwards to another travel on the peer bus, not over HTTP, so they need no token.
- **The Host check** (DNS rebinding): a browser visiting a hostile page can be made to send
  requests to ``127.0.0.1`` under the page's own name (the page's DNS name re-resolved to the
  loopback address); the ``Host`` header then names the attacker's domain. A request whose Host
  is not one of the node's own names is answered 421 ``misdirected_request`` (RFC 9110 §15.5.20:
  the request was sent to a server that is not configured to answer for that authority). The
  node's names: its bound host, its advertised host, ``127.0.0.1``, ``localhost``, ``[::1]``,
  and any ``--allowed-host`` / ``[security] allowed_hosts``, each with or without a port (any
  port: a forwarded port may differ, and the name is what rebinding forges). A node bound to a
  wildcard address (0.0.0.0, ::) also accepts any IP-literal Host: a rebinding attack needs a
  DNS name. An HTTP/1.0 request without Host passes (it names nothing). A request whose target
  is in absolute form (``GET http://name/kv/k``) names its authority there, which RFC 9112
  §3.2.2 says takes precedence over Host: that authority is checked (:func:`request_host`).

The tokens and the Host are checked from the request's head, before its body is read
(:meth:`realnet.api.Api.head_refusal`, the HTTP server's head check): a client without the
token is answered 401 at once, is sent no ``100 Continue``, and holds no body in the node's
buffers.

A token is a file's text with surrounding whitespace removed; it must be printable ASCII
without spaces (it travels in a header), and an empty or unreadable file is a startup error
(:func:`read_token`, a :class:`~kvcore.tables.ConfigError` sentence; exit status 2). Comparisons
use :func:`hmac.compare_digest`, whose time does not depend on where the first difference is.

:class:`HttpSecurity` and :func:`http_security_table` read this side's keys of ``[security]``
(the peer bus's ``secret_file`` lives in the same table; the two readers are kept apart so that
each side's keys are checked by the code that uses them).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kvcore.tables import ConfigError, read_table
from realnet.http import Response, error_response

__all__ = [
    "HTTP_SECURITY_KEYS",
    "PEER_SECURITY_KEYS",
    "HostCheck",
    "HttpSecurity",
    "TokenCheck",
    "read_token",
    "request_host",
    "secret_file_warnings",
    "http_security_table",
    "unauthorized",
]

#: 64 KiB: a token file is a line of text, not a document
_MAX_TOKEN_FILE = 64 * 1024


@dataclass(frozen=True)
class HttpSecurity:
    """The HTTP side's keys of ``[security]`` (flags of the same name beat them)."""

    #: file holding the token every admin ``POST /cluster/...`` must carry (None: admin open)
    admin_token_file: str | None = None
    #: file holding the token every ``/kv/`` request must carry (None: no client token)
    client_token_file: str | None = None
    #: extra names the Host header may carry (besides the node's own and the loopback names)
    allowed_hosts: tuple[str, ...] = ()
    #: most client connections open at once; more are answered 503 and closed (0: derived from
    #: the process's file-descriptor limit, see realnet.http.default_max_connections)
    max_clients: int = 0
    #: seconds a request head (request line and fields) may take to arrive; then 408 and close
    head_timeout: float = 10.0
    #: seconds a whole request (head and body) may take to arrive; then 408 and close (the
    #: default is the HTTP server's keep-alive timeout, what bounded a request before)
    request_timeout: float = 75.0
    #: bytes of request bodies buffered across all connections at once; past it, 503 and close
    max_buffered_bodies: int = 64 * 1024 * 1024


HTTP_SECURITY_KEYS = (
    "admin_token_file", "client_token_file", "allowed_hosts", "max_clients", "head_timeout",
    "request_timeout", "max_buffered_bodies",
)


#: the peer bus's keys of ``[security]``, read by its own reader (listed as known here)
PEER_SECURITY_KEYS = ("secret_file",)


def http_security_table(table: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The HTTP side's keys of ``[security]``: (well-typed values, problems). The peer bus's
    keys (:data:`PEER_SECURITY_KEYS`) are left to its reader; any other key is a problem."""
    values, problems = read_table(_SecurityTable, table, "[security]", handled=PEER_SECURITY_KEYS)
    hosts = values.get("allowed_hosts")
    if hosts is not None:
        if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
            problems.append("[security] allowed_hosts must be a list of host names.")
            values.pop("allowed_hosts")
        else:
            values["allowed_hosts"] = tuple(hosts)
    if values.get("max_clients", 0) < 0:
        problems.append("[security] max_clients must be 0 (derived) or a positive number.")
    if "head_timeout" in values and not values["head_timeout"] > 0:
        problems.append("[security] head_timeout must be a number of seconds above 0.")
    if "request_timeout" in values and not values["request_timeout"] > 0:
        problems.append("[security] request_timeout must be a number of seconds above 0.")
    if "max_buffered_bodies" in values and values["max_buffered_bodies"] < 1024:
        problems.append("[security] max_buffered_bodies must be at least 1024 bytes.")
    return values, problems


@dataclass(frozen=True)
class _SecurityTable:
    admin_token_file: str | None = None
    client_token_file: str | None = None
    allowed_hosts: Any = None
    max_clients: int | None = None
    head_timeout: float | None = None
    request_timeout: float | None = None
    max_buffered_bodies: int | None = None


def read_token(path: str, what: str) -> str:
    """The token in the file at ``path``: its text, surrounding whitespace removed. Raises
    ConfigError with a sentence for an unreadable, empty or unusable file."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_TOKEN_FILE + 1)
    except OSError as e:
        raise ConfigError([f"Cannot read the {what} file {path!r}: {e.strerror or e}."]) from None
    if len(raw) > _MAX_TOKEN_FILE:
        raise ConfigError([f"The {what} file {path!r} is over {_MAX_TOKEN_FILE} bytes; a token is one line."])
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError([f"The {what} file {path!r} must hold ASCII text."]) from None
    if not token:
        raise ConfigError([f"The {what} file {path!r} is empty."])
    if any(not 0x21 <= ord(c) <= 0x7E for c in token):
        raise ConfigError([
            f"The {what} in {path!r} must be printable ASCII without spaces (it travels in an "
            "Authorization header)."
        ])
    return token


_BEARER = (("WWW-Authenticate", "Bearer"),)


def unauthorized(what: str) -> Response:
    """401 ``unauthorized`` with a sentence and the challenge (RFC 6750 §3)."""
    resp = error_response(
        401, "unauthorized",
        f"This node requires the {what} token: send Authorization: Bearer TOKEN.",
    )
    resp.headers = _BEARER
    return resp


class TokenCheck:
    """``Authorization: Bearer TOKEN`` against one token, in constant time."""

    __slots__ = ("_expected", "_header")

    def __init__(self, token: str) -> None:
        self._expected = token.encode("ascii")
        #: the header value a client sends as the RFC writes it: one comparison on the hot path
        self._header = f"Bearer {token}"

    def ok(self, headers: Mapping[str, str]) -> bool:
        return self.ok_value(headers.get("authorization"))

    def ok_value(self, value: str | None) -> bool:
        """:meth:`ok` given the Authorization field's value (None: absent)."""
        if value is None:
            return False
        try:
            if hmac.compare_digest(value, self._header):  # str: ASCII only, else TypeError
                return True
        except TypeError:
            return False
        # any other spelling: a case-insensitive scheme, more spaces (RFC 9110 §11.1)
        scheme, _, cred = value.partition(" ")
        if scheme.lower() != "bearer":
            return False
        try:
            given = cred.strip().encode("ascii")
        except UnicodeEncodeError:
            return False
        return hmac.compare_digest(given, self._expected)


_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def request_host(target: str, headers: Mapping[str, str]) -> str | None:
    """The authority a request names: the absolute-form target's (``http://NAME[:PORT]/...``,
    RFC 9112 §3.2.2: it takes precedence over Host), else the Host field (None: HTTP/1.0 without
    one, which names nothing). The parser accepts no other target form but ``*``."""
    if target[:1] == "/" or target == "*":
        return headers.get("host")
    rest = target.split("//", 1)[1] if "//" in target else target
    for sep in "/?":
        cut = rest.find(sep)
        if cut >= 0:
            rest = rest[:cut]
    return rest.rpartition("@")[2]  # userinfo is no part of the name
_WILDCARDS = ("0.0.0.0", "::", "[::]", "")


def _bracket(host: str) -> str:
    """An IPv6 literal in the bracketed form a Host header uses."""
    h = host.strip()
    if ":" in h and not h.startswith("["):
        return f"[{h}]"
    return h


class HostCheck:
    """Is a ``Host`` header one of this node's own names? (see the module docstring)"""

    __slots__ = ("_names", "_ip_literals", "_seen")

    def __init__(self, bind_host: str, advertise_host: str | None, extra: Iterable[str] = ()) -> None:
        names = {*_LOOPBACK, _bracket(bind_host), *(_bracket(h) for h in extra)}
        if advertise_host:
            names.add(_bracket(advertise_host))
        names.discard("")
        self._names = frozenset(n.lower() for n in names)
        self._ip_literals = bind_host.strip() in _WILDCARDS
        #: Host values already judged (bounded): the hot path is one dict lookup
        self._seen: dict[str, bool] = {}

    def ok(self, host: str) -> bool:
        known = self._seen.get(host)
        if known is not None:
            return known
        verdict = self._judge(host)
        if len(self._seen) < 256:
            self._seen[host] = verdict
        return verdict

    def _judge(self, host: str) -> bool:
        h = host.strip().lower()
        if h.startswith("["):
            end = h.find("]")
            if end < 0:
                return False
            name, rest = h[: end + 1], h[end + 1 :]
        else:
            name, _, port = h.partition(":")
            rest = ":" + port if _ else ""
        if rest and not (rest.startswith(":") and rest[1:].isdigit() and len(rest) <= 6):
            return False
        if name in self._names:
            return True
        if self._ip_literals:
            try:
                ipaddress.ip_address(name.strip("[]"))
            except ValueError:
                return False
            return True
        return False

    def names(self) -> list[str]:
        return sorted(self._names)


def secret_file_warnings(files: Iterable[tuple[str, str | None]]) -> list[str]:
    """Sentences to log at start about the files holding secrets, given as (what, path): one
    other users may read (ssh refuses such keys; we warn), and one file serving two roles (a
    holder of one then holds both: a client token that opens the admin API, or the cluster
    secret). Files that cannot be read are the readers' errors, not ours."""
    out: list[str] = []
    seen: list[tuple[str, str, os.stat_result]] = []
    for what, path in files:
        if not path:
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        if os.name == "posix" and st.st_mode & 0o077:
            out.append(f"The {what} file {path!r} can be read by other users (mode "
                       f"{stat.S_IMODE(st.st_mode):04o}); make it private: chmod 600 {path}.")
        for other, other_path, other_st in seen:
            if (st.st_dev, st.st_ino) == (other_st.st_dev, other_st.st_ino):
                out.append(f"The {other} and the {what} are the same file ({other_path!r}): "
                           f"whoever holds one holds both; give each its own secret.")
        seen.append((what, path, st))
    return out

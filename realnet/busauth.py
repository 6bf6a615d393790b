"""The node process's side of the authenticated cluster bus: saying how the bus stands at start,
and reading the secret file again on SIGHUP.

Theory of operation
-------------------
:mod:`kvwire.auth` is the protocol and :mod:`realnet.transport` runs it; this module is the
process glue that ``realnet.node`` calls. At start the node says once whether its bus is
authenticated (the number of keys and the primary key's public id) or open (a warning unless it
is bound to loopback: anyone who reaches the peer port can join). With a secret file, SIGHUP
reads the file again (:func:`reload_keyring`): new keys are used from then on
(:meth:`realnet.transport.PeerTransport.set_keyring`); a file that cannot be used is logged and
counted, and the keys in use stay. SIGHUP is left alone without a secret file, so it still ends
such a process as it always did.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from kvwire.auth import KeyringError, key_id, read_keyring
from realnet.transport import PeerTransport

log = logging.getLogger("realnet.node")

__all__ = ["install_reload", "reload_keyring", "say_bus"]


def install_reload(
    loop: asyncio.AbstractEventLoop, transport: PeerTransport, path: str | None
) -> list[int]:
    """With a secret file, SIGHUP reads it again: key rotation without a restart. Returns the
    signals installed (for removal at shutdown)."""
    if not path or transport.keyring is None:
        return []

    def on_hup() -> None:
        reload_keyring(transport, path)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError):
        return []  # not the main thread, or no SIGHUP on this platform
    return [signal.SIGHUP]


def reload_keyring(transport: PeerTransport, path: str) -> bool:
    """Read the secret file again and use its keys; a bad file is logged and the old keys kept."""
    try:
        keyring = read_keyring(path)
    except KeyringError as e:
        transport.stats.keyring_reload_failures += 1
        log.error("cannot reload the cluster secret (keeping the keys in use): %s", e)
        return False
    transport.set_keyring(keyring)
    transport.stats.keyring_reloads += 1
    log.info(
        "reloaded the cluster secret from %s: %d key(s), primary key id %s",
        path, len(keyring.keys), key_id(keyring.primary).hex(),
    )
    return True


def say_bus(transport: PeerTransport, path: str | None, host: str, peer_port: int) -> None:
    """Say once at start whether the cluster bus is authenticated."""
    keyring = transport.keyring
    if keyring is not None:
        log.info(
            "the cluster bus is authenticated: %d key(s) from %s, primary key id %s",
            len(keyring.keys), path, key_id(keyring.primary).hex(),
        )
        return
    loopback = host in ("127.0.0.1", "::1", "localhost")
    log.log(
        logging.INFO if loopback else logging.WARNING,
        "the cluster bus is open (unauthenticated): whoever reaches peer port %d can join the "
        "cluster and rewrite its slot map; give every node the same --secret-file",
        peer_port,
    )

"""The not-found sentence names the key as text a user can read, not as a Python bytes repr."""

from __future__ import annotations

from typing import Any

import pytest

from kvcore.messages import Delete, Get
from tests.kvcore.test_node import build, request


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        (b"nope", "'nope'"),
        ("caf\u00e9".encode(), "'caf\u00e9'"),  # printable non-ASCII stays as it is
        (b"a\nb\x00", "'a\\nb\\x00'"),  # what does not print is escaped
        (b"\xff", "'\\udcff'"),  # bytes that are not UTF-8 are escaped, never dropped
    ],
)
@pytest.mark.parametrize("op", [Get, Delete])
def test_not_found_names_the_key_decoded_as_utf8_with_escapes(key: bytes, shown: str, op: Any) -> None:
    node, rt = build()
    (r,) = request(node, rt, op(key=key)).replies
    assert r.error == "not_found"
    assert r.message == f"key {shown} not found"
    assert "b'" not in r.message and 'b"' not in r.message

"""The boundary (ARCHITECTURE.md): kvcore imports only the standard library, never does I/O.

Two checks. A static one parses every ``kvcore/**/*.py`` with :mod:`ast` and walks every Import
and ImportFrom node (function-level ones included) and every use of the ``random`` module. A
dynamic one imports kvcore in a fresh interpreter and looks at ``sys.modules``.

Today no standard module kvcore imports pulls in ``threading`` (checked under ``-I -S``), so the
dynamic check asserts the forbidden modules are absent outright, and also that importing kvcore
did not add them (should a future Python's stdlib start importing threading on its own, the
static check still pins what kvcore's own modules import).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KVCORE = REPO / "kvcore"

#: ARCHITECTURE.md, "The boundary": never imported by kvcore.
FORBIDDEN_MODULES = frozenset({"asyncio", "simpy", "socket", "threading", "time", "selectors"})
#: Also I/O, concurrency or dynamic imports that would slip past this checker.
ALSO_FORBIDDEN = frozenset(
    {"_thread", "concurrent", "multiprocessing", "subprocess", "select", "ssl", "importlib"}
)
#: The only names kvcore may take from the random module: the class a Runtime hands out.
RANDOM_ALLOWED = frozenset({"Random"})


def boundary_violations(source: str, filename: str = "<source>") -> list[str]:
    """Every boundary rule a module's source breaks, one line each (empty when clean)."""
    tree = ast.parse(source, filename)
    out: list[str] = []
    random_aliases: set[str] = set()

    def check_module(name: str, lineno: int) -> None:
        top = name.split(".")[0]
        if top == "kvcore":
            return
        if top in FORBIDDEN_MODULES or top in ALSO_FORBIDDEN:
            out.append(f"{filename}:{lineno}: imports {name}, which kvcore must never import")
        elif top not in sys.stdlib_module_names:
            out.append(f"{filename}:{lineno}: imports {name}, which is not in the standard library")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                check_module(alias.name, node.lineno)
                if alias.name == "random":
                    random_aliases.add(alias.asname or "random")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside kvcore
                continue
            module = node.module or ""
            check_module(module, node.lineno)
            if module == "random":
                for alias in node.names:
                    if alias.name not in RANDOM_ALLOWED:
                        out.append(
                            f"{filename}:{node.lineno}: takes random.{alias.name} from the global "
                            "random (use the Runtime's random)"
                        )
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            out.append(f"{filename}:{node.lineno}: calls __import__")

    # Second pass, now that aliases of the random module are known: any attribute of it other
    # than Random (random.random(), random.randint(...), f = random.choice, ...) uses the
    # process-global generator.
    if random_aliases:
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in random_aliases
                and node.attr not in RANDOM_ALLOWED
            ):
                out.append(
                    f"{filename}:{node.lineno}: uses random.{node.attr} of the global random "
                    "(use the Runtime's random)"
                )
    return out


def kvcore_sources() -> list[Path]:
    return sorted(KVCORE.rglob("*.py"))


def test_the_checker_sees_every_kvcore_module() -> None:
    names = {p.relative_to(KVCORE).as_posix() for p in kvcore_sources()}
    assert {"__init__.py", "node/__init__.py", "node/node.py", "runtime.py", "codec.py", "slots.py"} <= names


@pytest.mark.parametrize("path", kvcore_sources(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_kvcore_module_keeps_the_boundary(path: Path) -> None:
    rel = path.relative_to(REPO).as_posix()
    assert boundary_violations(path.read_text(encoding="utf-8"), rel) == []


# --- the checker can fail ------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "import socket",
        "import asyncio.events",
        "import time",
        "from time import monotonic",
        "import threading as th",
        "from selectors import DefaultSelector",
        "import simpy",
        "import numpy",
        "import msgpack.fallback",
        "from realnet import node",
        "import kvwire",
        "from checker import check",
        "def f():\n    from sim.cluster import SimCluster\n",
        "def f():\n    import threading\n",
        "class A:\n    def f(self):\n        from asyncio import sleep\n",
        "try:\n    import socket\nexcept ImportError:\n    pass\n",
        "import random\nx = random.random()",
        "import random\nx = random.randint(1, 6)",
        "import random\nrandom.shuffle([1, 2])",
        "import random\nrandom.seed(1)",
        "import random\npick = random.choice",
        "import random as r\nr.uniform(0, 1)",
        "def f():\n    import random\n    return random.getrandbits(8)\n",
        "from random import choice",
        "from random import Random, randint",
        "from random import *",
        "import importlib\nimportlib.import_module('socket')",
        "m = __import__('socket')",
        "from concurrent.futures import ThreadPoolExecutor",
    ],
)
def test_checker_flags_a_bad_source(source: str) -> None:
    assert boundary_violations(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "import random\nrng = random.Random(1)",
        "from random import Random",
        "import random\nclass R:\n    random: random.Random\n",
        "def f(rt):\n    return rt.random.uniform(0, 1)\n",
        "import zlib, heapq, dataclasses, typing, collections.abc",
        "from __future__ import annotations",
        "from . import slots",
        "from .slots import key_slot",
        "from kvcore.slots import key_slot",
        "import kvcore.codec",
    ],
)
def test_checker_accepts_a_clean_source(source: str) -> None:
    assert boundary_violations(source) == []


# --- what importing kvcore loads -----------------------------------------------------------

_PROBE = """
import json, sys
before = set(sys.modules)
sys.path.insert(0, sys.argv[1])
import kvcore, kvcore.codec, kvcore.config, kvcore.membership, kvcore.metrics, kvcore.node, kvcore.epidemic
import kvcore.runtime, kvcore.slots, kvcore.store, kvcore.errors, kvcore.messages
print(json.dumps({"before": sorted(before), "after": sorted(sys.modules)}))
"""


def test_importing_kvcore_loads_no_io_or_thread_modules() -> None:
    # -I: ignore the environment and user site; -S: no site-packages, so kvcore must import
    # with the standard library alone.
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _PROBE, str(REPO)],
        capture_output=True,
        text=True,
        check=True,
    )
    mods = json.loads(out.stdout)
    before, after = set(mods["before"]), set(mods["after"])
    added = after - before
    tops = {m.split(".")[0] for m in added}
    assert "kvcore" in tops
    watched = {"asyncio", "simpy", "socket", "threading", "selectors", "msgpack", "numpy"}
    assert tops & watched == set(), f"importing kvcore loaded {sorted(tops & watched)}"
    assert after & watched == set(), f"present after importing kvcore: {sorted(after & watched)}"
    non_stdlib = {t for t in tops if t != "kvcore" and t not in sys.stdlib_module_names}
    assert non_stdlib == set()

"""The layout: neither world imports the other, and the shared packages import neither world.

Theory of operation
-------------------
Two worlds run the same kvcore nodes: ``sim/`` (SimPy) and ``realnet/`` (asyncio and TCP).
What both need lives outside both: ``kvcore/`` (the node logic), ``kvwire/`` (the bytes on the
cluster bus) and ``checker/`` (the linearizability checker, which judges any system's history
and so knows no world at all). The rules, one per package, are in :data:`RULES`:

============  =====================================================================
package       may not import
============  =====================================================================
``sim``       realnet
``realnet``   sim
``kvwire``    sim, realnet, checker, simpy
``checker``   anything outside the standard library (so no sim, realnet, simpy,
              kvcore, kvwire); and no asyncio, since it does no I/O but files
``kvcore``    see tests/kvcore/test_boundary.py (standard library only, no I/O)
============  =====================================================================

The static check parses every module of a package with :mod:`ast` and walks the whole tree, so
an import inside a function (a lazy import) counts the same as one at the top; relative imports
are resolved against the module's package; ``importlib.import_module("x")`` and
``__import__("x")`` with a literal name count as imports of ``x``. A dynamic check then imports
every module of a package in a fresh interpreter and looks at ``sys.modules``, which also catches
what a dependency drags in. Old import paths kept for compatibility (``sim.checker``,
``realnet.wire``) are tested at the end.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Rule:
    package: str
    #: top-level packages this package must never import
    forbidden: frozenset[str]
    #: when set, the only non-standard-library top-level packages it may import (itself aside)
    only_stdlib: bool = False


RULES = (
    Rule("sim", frozenset({"realnet"})),
    Rule("realnet", frozenset({"sim"})),
    Rule("kvwire", frozenset({"sim", "realnet", "checker", "simpy"})),
    Rule("checker", frozenset({"sim", "realnet", "simpy", "asyncio", "kvcore", "kvwire"}), only_stdlib=True),
)
RULE_IDS = [rule.package for rule in RULES]


def module_name(path: Path) -> str:
    """``sim/checker/__init__.py`` -> ``sim.checker``; ``sim/network.py`` -> ``sim.network``."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str = "pkg.mod", is_package: bool = False) -> list[tuple[str, int]]:
    """Every module a source imports, as (absolute dotted name, line), lazy imports included."""
    tree = ast.parse(source)
    # The package a relative import is resolved against (PEP 328): the module itself if it is a
    # package's __init__, else its parent.
    package = module.split(".") if is_package else module.split(".")[:-1]
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - (node.level - 1)] if node.level else []
            if node.module:
                out.append((".".join([*base, node.module]), node.lineno))
            else:  # "from . import x": x is a module of the package
                out.extend((".".join([*base, alias.name]), node.lineno) for alias in node.names)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            first = node.args[0]
            if called in ("import_module", "__import__") and isinstance(first, ast.Constant) and isinstance(
                first.value, str
            ):
                out.append((first.value, node.lineno))
    return out


def rule_violations(rule: Rule, source: str, module: str, filename: str, is_package: bool = False) -> list[str]:
    """Every import of a module's source that breaks the package's rule, one line each."""
    out = []
    for name, line in imported_modules(source, module, is_package):
        top = name.split(".")[0]
        if top == rule.package or top == "__future__":
            continue
        if top in rule.forbidden:
            out.append(f"{filename}:{line}: imports {name}; {rule.package}/ must not import {top}")
        elif rule.only_stdlib and top not in sys.stdlib_module_names:
            out.append(f"{filename}:{line}: imports {name}; {rule.package}/ imports the standard library only")
    return out


def sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


# --- the rules hold --------------------------------------------------------------------------


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
def test_every_package_has_modules_to_check(rule: Rule) -> None:
    assert (REPO / rule.package / "__init__.py").is_file()
    assert len(sources(rule.package)) >= 2


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
def test_package_keeps_its_import_rule(rule: Rule) -> None:
    problems = []
    for path in sources(rule.package):
        rel = path.relative_to(REPO).as_posix()
        problems += rule_violations(
            rule, path.read_text(encoding="utf-8"), module_name(path), rel, path.name == "__init__.py"
        )
    assert problems == []


_PROBE = """
import importlib, json, pkgutil, sys
sys.path.insert(0, sys.argv[1])
package = importlib.import_module(sys.argv[2])
names = [sys.argv[2]] + [m.name for m in pkgutil.walk_packages(package.__path__, sys.argv[2] + ".")
                         if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "loaded": sorted({m.split(".")[0] for m in sys.modules})}))
"""


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
def test_importing_every_module_loads_nothing_forbidden(rule: Rule) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(REPO), rule.package],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        timeout=120,
    )
    report = json.loads(out.stdout)
    assert len(report["imported"]) >= 2
    loaded = set(report["loaded"])
    assert loaded & rule.forbidden == set(), f"importing {rule.package} loaded {sorted(loaded & rule.forbidden)}"


# --- the check can fail ----------------------------------------------------------------------

SIM, REALNET, KVWIRE, CHECKER = RULES


@pytest.mark.parametrize(
    ("rule", "source", "module"),
    [
        (SIM, "from realnet.wire import pack", "sim.network"),
        (SIM, "import realnet.wire", "sim.network"),
        (SIM, "class N:\n    def __init__(self):\n        from realnet.wire import pack, unpack\n", "sim.network"),
        (SIM, "def f():\n    if True:\n        import realnet\n", "sim.network"),
        (SIM, "import importlib\nimportlib.import_module('realnet.wire')", "sim.network"),
        (SIM, "w = __import__('realnet')", "sim.network"),
        (REALNET, "from sim.checker import check", "realnet.history"),
        (REALNET, "def check(self):\n    from sim.checker import check\n", "realnet.history"),
        (REALNET, "from sim import clients", "realnet.history"),
        (KVWIRE, "import realnet.transport", "kvwire.frames"),
        (KVWIRE, "from sim.trace import Trace", "kvwire.frames"),
        (KVWIRE, "import simpy", "kvwire.frames"),
        (CHECKER, "import simpy", "checker.search"),
        (CHECKER, "import asyncio", "checker.search"),
        (CHECKER, "from sim.clients import OK", "checker.history"),
        (CHECKER, "def f():\n    from realnet.history import HistoryRecorder\n", "checker.history"),
        (CHECKER, "from kvcore.errors import StoreError", "checker.history"),
        (CHECKER, "import numpy as np", "checker.search"),
        (CHECKER, "import msgpack", "checker.history"),
    ],
)
def test_the_check_flags_a_forbidden_import(rule: Rule, source: str, module: str) -> None:
    assert rule_violations(rule, source, module, "<source>") != []


@pytest.mark.parametrize(
    ("rule", "source", "module"),
    [
        (SIM, "from kvwire import pack, unpack", "sim.network"),
        (SIM, "from checker import check", "sim.sweep"),
        (SIM, "import simpy\nfrom kvcore.node import Node", "sim.cluster"),
        (SIM, "from .trace import Trace", "sim.network"),
        (SIM, "from . import realnet_notes", "sim.network"),  # sim.realnet_notes: inside sim
        (REALNET, "import kvwire\nimport asyncio", "realnet.transport"),
        (REALNET, "from checker import check", "realnet.history"),
        (KVWIRE, "import msgpack\nfrom kvcore import codec", "kvwire.frames"),
        (KVWIRE, "from .frames import pack", "kvwire"),
        (CHECKER, "import json, gc, time\nfrom collections.abc import Sequence", "checker.search"),
        (CHECKER, "from checker.models import Model\nfrom .history import Op", "checker.witness"),
        (CHECKER, "from __future__ import annotations", "checker.history"),
    ],
)
def test_the_check_accepts_an_allowed_import(rule: Rule, source: str, module: str) -> None:
    assert rule_violations(rule, source, module, "<source>") == []


def test_relative_imports_resolve_against_the_package() -> None:
    assert imported_modules("from .frames import pack", "kvwire", is_package=True) == [("kvwire.frames", 1)]
    assert imported_modules("from .frames import pack", "kvwire.other") == [("kvwire.frames", 1)]
    assert imported_modules("from . import trace, latency", "sim.network") == [("sim.trace", 1), ("sim.latency", 1)]
    assert imported_modules("from realnet import wire", "sim.network") == [("realnet", 1)]
    assert imported_modules("from ..models import Op", "sim.checker.witness") == [("sim.models", 1)]


# --- the old import paths still work ---------------------------------------------------------


def test_sim_checker_is_an_alias_of_checker() -> None:
    from sim.checker.history import write_jsonl
    from sim.checker.models import get_model

    import checker
    import checker.history
    import sim.checker

    assert sim.checker.check is checker.check
    assert set(sim.checker.__all__) == set(checker.__all__)
    assert write_jsonl is checker.history.write_jsonl
    assert get_model is checker.get_model
    assert sim.checker.history is checker.history


def test_python_m_sim_checker_still_runs_the_checker(tmp_path: Path) -> None:
    history = tmp_path / "h.jsonl"
    history.write_text(
        '{"process": 0, "type": "invoke", "f": "put", "key": "x", "value": "1"}\n'
        '{"process": 0, "type": "ok", "f": "put", "key": "x", "value": "1"}\n'
    )
    for module in ("checker", "sim.checker"):
        done = subprocess.run(
            [sys.executable, "-m", module, str(history)], cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "verdict:    LINEARIZABLE" in done.stdout


def test_realnet_wire_re_exports_kvwire() -> None:
    import kvwire
    import realnet.wire

    for name in realnet.wire.__all__:
        assert getattr(realnet.wire, name) is getattr(kvwire, name)
    assert set(realnet.wire.__all__) == set(kvwire.__all__)

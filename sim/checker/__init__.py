"""Moved: the linearizability checker is now the top-level package :mod:`checker`.

It judges any system's history and knows no world, so it no longer lives inside the sim. This
alias keeps old imports working (``from sim.checker import check``, and the submodules such as
``sim.checker.history``, which are the very same module objects as ``checker.history``) and
``python -m sim.checker FILE`` (see :mod:`sim.checker.__main__`). New code imports ``checker``.
"""

import importlib
import sys

from checker import *  # noqa: F403
from checker import __all__ as __all__

# The same module objects under the old names, so `from sim.checker.history import X` works and
# isinstance checks agree across both spellings.
for _name in ("checker", "history", "models", "search", "witness"):
    _module = importlib.import_module(f"checker.{_name}")
    sys.modules[f"{__name__}.{_name}"] = _module
    globals()[_name] = _module
del _name, _module

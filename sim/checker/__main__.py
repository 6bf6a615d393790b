"""``python -m sim.checker FILE ...``: the old spelling of ``python -m checker`` (it moved)."""

import sys

from checker.__main__ import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m bnlab``: the ``bnlab`` command."""

import sys

from bnlab.cli import main

if __name__ == "__main__":
    sys.exit(main())

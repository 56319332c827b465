"""``python -m bnlab.cli``: the ``bnlab`` command."""

import sys

from bnlab.cli import main

if __name__ == "__main__":
    sys.exit(main())

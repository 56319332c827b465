"""``python -m bnlab``: the ``bnlab`` command."""

import sys

from bnlab.cli import command

if __name__ == "__main__":
    sys.exit(command())

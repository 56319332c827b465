"""``python -m bnlab.cli``: the ``bnlab`` command."""

import sys

from bnlab.cli import command

if __name__ == "__main__":
    sys.exit(command())

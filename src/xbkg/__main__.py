"""Run the command line as ``python -m xbkg``."""

import sys

from xbkg.cli import program

sys.exit(program())

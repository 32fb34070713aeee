"""Run the command line as ``python -m xbkg``."""

from xbkg.cli import program

program()

"""The alphaedit-lite command line: argparse and printing only (the work is done by the library)."""
from alphaedit_lite.cli.app import main

__all__ = ["main"]

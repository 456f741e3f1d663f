"""``python -m stcorr``: the command line (:mod:`stcorr.cli`)."""

import sys

from stcorr.cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())

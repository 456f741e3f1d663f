"""``python -m stcorr.eval``: score result folders (:mod:`stcorr.eval.cli`)."""

import sys

from stcorr.eval.cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())

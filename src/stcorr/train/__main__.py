"""``python -m stcorr.train``: train an encoder (:mod:`stcorr.train.cli`)."""

import sys

from stcorr.train.cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())

"""``python -m stcorr.eval``: score result folders."""

import sys

from stcorr.eval.cli import main

sys.exit(main())

"""``python -m stcorr``: the command line."""

import sys

from stcorr.cli import main

sys.exit(main())

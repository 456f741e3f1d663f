"""Bridges to other tools, each an optional module with its own extra: :mod:`stcorr.integrations.cvat` (CVAT's
auto-annotation tracking functions, ``pip install "stcorr[cvat]"``)."""

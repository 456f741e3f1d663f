"""Label propagation."""

from stcorr.propagation.kernel import LabelPropagator, default_block_size, iter_propagate, propagate

__all__ = ["LabelPropagator", "default_block_size", "iter_propagate", "propagate"]

"""The I/O layer: frame sources, masks and palette, videos, point tracks and rendering.

No module here imports the model, features or propagation layers.
"""

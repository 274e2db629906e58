"""squeeze: an edge-deployment compression compiler for PyTorch models."""

__version__ = "0.1.0"

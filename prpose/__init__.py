"""prpose: view-invariant probabilistic human pose embeddings (Pr-VIPE) and 3D-similar pose retrieval."""

__version__ = "0.1.0"

"""Transaction enrichment library: ingest, tagging, annotation, storage, checks, alerts.

A plain Python package (no Metaflow import): typed, vectorized pandas/pyarrow
functions that the flow in ``flows/`` wires together.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"

"""Samples, loaders, bundled datasets and leakage checks."""

from openrft.data.sample import ANSWER_TYPES, LETTERS, DataError, Sample

__all__ = ["ANSWER_TYPES", "LETTERS", "DataError", "Sample"]

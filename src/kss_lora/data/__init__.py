"""Data loading: files, ``datasets`` datasets and a built-in synthetic set (formats: docs/data.md)."""

from .files import resolved_data_paths
from .loading import (
    ClassificationData,
    Split,
    load_classification_data,
    load_split,
    stratified_sample,
    stratified_split,
)
from .synthetic import make_synthetic

__all__ = [
    "ClassificationData",
    "Split",
    "load_classification_data",
    "load_split",
    "make_synthetic",
    "resolved_data_paths",
    "stratified_sample",
    "stratified_split",
]

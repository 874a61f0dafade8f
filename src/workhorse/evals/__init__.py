"""Evaluation: the shared datasets and users' data files (`datasets`), and the metrics (`metrics`)."""

from workhorse.evals.datasets import Dataset, Example, available, datasets_root, load, load_file, sample
from workhorse.evals.metrics import (
    classification_report,
    entity_f1,
    expected_calibration_error,
    extraction_report,
    knn_accuracy,
    latency_summary,
    multilabel_report,
    nearest_neighbours,
    neighbour_report,
    retrieval_at_k,
)

__all__ = [
    "Dataset",
    "Example",
    "available",
    "classification_report",
    "datasets_root",
    "entity_f1",
    "expected_calibration_error",
    "extraction_report",
    "knn_accuracy",
    "latency_summary",
    "load",
    "load_file",
    "multilabel_report",
    "nearest_neighbours",
    "neighbour_report",
    "retrieval_at_k",
    "sample",
]

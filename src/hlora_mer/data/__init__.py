"""Datasets as their owners distribute them, read into one canonical sample table.

``load_dataset(name, root)`` reads a dataset root unchanged from the download; ``apply_label_scheme``
labels the table with a scheme from ``hlora_mer.data.annotations.labels``; ``check_dataset`` cross-checks the
table against the files. Dataset facts: ``docs/datasets.md``.
"""

from hlora_mer.data.annotations.labels import LabelScheme, apply_label_scheme, get_scheme, list_schemes
from hlora_mer.data.frames import frame_number, list_frames, read_frame
from hlora_mer.data.loading import LoadedDataset
from hlora_mer.data.registry import DatasetSpec, get_dataset_spec, list_datasets, load_dataset
from hlora_mer.data.table import COLUMNS
from hlora_mer.data.validate import Problem, check_dataset, summarize

__all__ = [
    "COLUMNS",
    "DatasetSpec",
    "LabelScheme",
    "LoadedDataset",
    "Problem",
    "apply_label_scheme",
    "check_dataset",
    "frame_number",
    "get_dataset_spec",
    "get_scheme",
    "list_datasets",
    "list_frames",
    "list_schemes",
    "load_dataset",
    "read_frame",
    "summarize",
]

"""Samples, loaders, bundled datasets and leakage checks."""

from openrft.data.bundled import (
    SCIKNOWEVAL_TASKS,
    bundled_path,
    get_bundled,
    list_bundled,
    split_samples,
)
from openrft.data.leakage import LeakageReport, leakage_report, normalize_text
from openrft.data.loaders import (
    load_bundled,
    load_csv,
    load_gsm8k,
    load_hf_from_disk,
    load_json,
    load_jsonl,
    load_parquet,
    load_samples,
    load_sources,
    load_sciknoweval,
    load_svamp,
    save_samples,
)
from openrft.data.records import FieldMap, canonical_number
from openrft.data.sample import ANSWER_TYPES, LETTERS, DataError, Sample

__all__ = [
    "ANSWER_TYPES",
    "LETTERS",
    "SCIKNOWEVAL_TASKS",
    "DataError",
    "FieldMap",
    "LeakageReport",
    "Sample",
    "bundled_path",
    "canonical_number",
    "get_bundled",
    "leakage_report",
    "list_bundled",
    "load_bundled",
    "load_csv",
    "load_gsm8k",
    "load_hf_from_disk",
    "load_json",
    "load_jsonl",
    "load_parquet",
    "load_samples",
    "load_sources",
    "load_sciknoweval",
    "load_svamp",
    "normalize_text",
    "save_samples",
    "split_samples",
]

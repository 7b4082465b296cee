"""Data layer: readers for the folder / JSONL / char-span formats, splits, label maps.

Downloading lives in ``slu_feedback.data.fetch`` (not re-exported, so the submodule name stays usable).
"""

from .dataset import (SPLITS, UNKNOWN_ID, LabelMaps, build_label_maps, detect_format, load_data,
                      load_splits, pick_split, read_split, resolve_data_path, slot_types_by_intent, subsample,
                      to_dataset)
from .errors import DataError
from .readers import (WORD_SPLITS, bio_to_spans, read_folder_split, read_jsonl, read_span_json, split_whitespace,
                      tokenize, word_split_of, write_examples)

__all__ = [
    "DataError", "tokenize", "split_whitespace", "WORD_SPLITS", "word_split_of", "bio_to_spans", "read_folder_split", "read_jsonl", "read_span_json",
    "write_examples", "SPLITS", "UNKNOWN_ID", "LabelMaps", "build_label_maps", "detect_format",
    "load_data", "load_splits", "pick_split", "read_split", "resolve_data_path", "slot_types_by_intent", "subsample", "to_dataset",
]

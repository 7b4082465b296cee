"""Sub-word alignment and batching: words -> model inputs, and back.

Each word is represented by its first sub-token (`word_index`), so the model's slot outputs are
word-level and map straight back to the words (and, through their offsets, to characters).
Words cut off by `max_length` are not seen by the model; their predictions default to "O".
"""

import math
import warnings

import torch
from torch.utils.data import DataLoader, Sampler

from .dataset import UNKNOWN_ID

# the label columns are named as SLUModel.forward's arguments (transformers' Trainer keeps only those)
FEATURE_COLUMNS = ["input_ids", "attention_mask", "word_index", "intent_labels", "slot_labels"]
LEGACY_PARSE_LENGTH = 128  # the parsers' cut for runs whose config has no train_max_length (trained before 2026-12-02)


def parse_length(config, max_length: int | None = None) -> int:
    """Sub-tokens per utterance at parse time: `max_length` if given, else the run's training
    `data.max_length` (`config.train_max_length`), so that parsing cuts where training and `slu-eval` did."""
    return max_length or getattr(config, "train_max_length", None) or LEGACY_PARSE_LENGTH


def encode_words(tokenizer, batch_tokens: list, max_length: int) -> dict:
    """Tokenise pre-split words; return input ids plus the first sub-token position of each word.
    A word the tokenizer turns into nothing (a lone control, zero-width or U+FFFD character) is
    encoded as the unknown token, so that it has a position of its own (as JointBERT does)."""
    batch_tokens = [_unknown_for_empty(tokenizer, words) for words in batch_tokens]
    encoding = tokenizer(batch_tokens, is_split_into_words=True, truncation=True, max_length=max_length)
    word_index = []
    for i in range(len(batch_tokens)):
        first = {}
        for position, word in enumerate(encoding.word_ids(i)):
            if word is not None and word not in first:
                first[word] = position
        # words cut by truncation have no position; a word with no sub-tokens (only where the tokenizer
        # has no unknown token) borrows [CLS]'s position 0
        kept = max(first) + 1 if first else 0
        word_index.append([first.get(w, 0) for w in range(kept)])
    return {"input_ids": encoding["input_ids"], "attention_mask": encoding["attention_mask"], "word_index": word_index}


def _unknown_for_empty(tokenizer, words: list) -> list:
    """`words` with each word that has no sub-tokens replaced by the tokenizer's unknown token."""
    if getattr(tokenizer, "unk_token", None) is None or all(word.isascii() and word.isprintable() for word in words):
        return words  # the common case: no tokenizer call
    return [word if tokenizer.tokenize(word) else tokenizer.unk_token for word in words]


def make_features(examples: dict, tokenizer, label_maps, max_length: int) -> dict:
    """`datasets.map` function (batched): add model inputs and label ids to a batch of examples."""
    features = encode_words(tokenizer, examples["tokens"], max_length)
    features["intent_labels"] = [label_maps.intent_id(x) for x in examples["intent"]]  # None -> ignored
    features["slot_labels"] = [
        [UNKNOWN_ID] * len(index) if tags is None else [label_maps.slot_id(tag) for tag in tags[: len(index)]]
        for tags, index in zip(examples["slots"], features["word_index"])
    ]  # an utterance without slot labels (None) is ignored by the slot loss
    return features


def _pad(rows: list, value) -> torch.Tensor:
    width = max((len(r) for r in rows), default=0)
    width = max(width, 1)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def collate(rows: list, pad_token_id: int = 0) -> dict:
    """Dynamic padding to the longest utterance in the batch."""
    batch = {
        "input_ids": _pad([r["input_ids"] for r in rows], pad_token_id),
        "attention_mask": _pad([r["attention_mask"] for r in rows], 0),
        "word_index": _pad([r["word_index"] for r in rows], 0),
    }
    batch["word_mask"] = _pad([[1] * len(r["word_index"]) for r in rows], 0).bool()
    if "intent_labels" in rows[0]:
        batch["intent_labels"] = torch.tensor([r["intent_labels"] for r in rows], dtype=torch.long)
        batch["slot_labels"] = _pad([r["slot_labels"] for r in rows], -100)
    return batch


class LengthGroupedBatches(Sampler):
    """Shuffled batches of similar-length utterances, so little compute goes to padding.

    Each epoch: shuffle all indices, cut them into windows of `window` batches, sort each window
    by length, batch it, then shuffle the batches. Randomness comes from torch's global generator,
    which the trainer seeds per epoch, so a resumed run sees the same batches.
    """

    def __init__(self, lengths: list, batch_size: int, window: int = 50):
        self.lengths, self.batch_size, self.window = lengths, batch_size, window

    def __iter__(self):
        order = torch.randperm(len(self.lengths)).tolist()
        span = self.window * self.batch_size
        batches = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start:start + span], key=lambda i: self.lengths[i])
            batches += [chunk[j:j + self.batch_size] for j in range(0, len(chunk), self.batch_size)]
        for b in torch.randperm(len(batches)).tolist():
            yield batches[b]

    def __len__(self):
        return sum(math.ceil(min(self.window * self.batch_size, len(self.lengths) - s) / self.batch_size)
                   for s in range(0, len(self.lengths), self.window * self.batch_size))


def make_loader(features, batch_size: int, tokenizer, shuffle: bool, num_workers: int = 0,
                group_by_length: bool = False) -> DataLoader:
    pad_id = tokenizer.pad_token_id or 0
    collate_fn = lambda rows: collate(rows, pad_id)  # noqa: E731
    if shuffle and group_by_length:
        batches = LengthGroupedBatches([len(x) for x in features["input_ids"]], batch_size)
        return DataLoader(features, batch_sampler=batches, num_workers=num_workers, collate_fn=collate_fn)
    return DataLoader(features, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, collate_fn=collate_fn)


def featurize(split, tokenizer, label_maps, max_length: int, name: str = "data"):
    """Raw examples -> model inputs (kept in memory; `datasets` caches on disk only for file-backed data).
    Warns, naming the split (`name`), how many utterances `max_length` cuts: their last words are
    neither trained on nor seen when scoring (predicted O)."""
    features = split.map(make_features, batched=True, fn_kwargs={
        "tokenizer": tokenizer, "label_maps": label_maps, "max_length": max_length})
    cut = sum(len(index) < len(words) and len(ids) >= max_length  # (not trailing words without sub-tokens)
              for index, words, ids in zip(features["word_index"], features["tokens"], features["input_ids"]))
    if cut:
        warnings.warn(f"{name}: {cut} of {len(features)} utterances are longer than max_length={max_length} "
                      f"sub-tokens; their last words are cut (not trained on, predicted O)")
    return features.select_columns(FEATURE_COLUMNS)

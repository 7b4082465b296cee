"""Encoders other than BERT: a byte-level BPE encoder (RoBERTa style, built in code) must see each
word as it appears inside a sentence, in training and when the run is loaded to parse."""

import pytest
import torch
from tokenizers import ByteLevelBPETokenizer, Regex, pre_tokenizers
from tokenizers.processors import RobertaProcessing, TemplateProcessing
from transformers import AutoTokenizer, PreTrainedTokenizerFast, RobertaConfig, RobertaModel, RobertaTokenizerFast

from slu_feedback.models import load_run
from slu_feedback.models.encoders import load_word_tokenizer, words_encode_as_in_text
from slu_feedback.training.recipe import load_recipe
from slu_feedback.training.trainer import TrainingError, train

from conftest import REPO, SAMPLE, tiny_overrides


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory) -> str:
    """A 2-layer RoBERTa with random weights and a byte-level BPE vocabulary learnt from the sample set."""
    path = tmp_path_factory.mktemp("tiny-roberta")
    bpe = ByteLevelBPETokenizer()
    bpe.train([str(SAMPLE / "train" / "seq.in")], vocab_size=400, min_frequency=1,
              special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    bpe._tokenizer.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                                     unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    RobertaModel(RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=130, pad_token_id=1)).save_pretrained(path)
    return str(path)


def word_pieces(tokenizer, words):
    """The sub-tokens of `words` given one by one, without <s> and </s>."""
    return tokenizer.convert_ids_to_tokens(tokenizer([words], is_split_into_words=True)["input_ids"][0])[1:-1]


def test_byte_level_words_are_encoded_as_inside_a_sentence(tiny_roberta):
    plain = AutoTokenizer.from_pretrained(tiny_roberta)
    words = ["flights", "to", "boston"]
    in_sentence = plain.convert_ids_to_tokens(plain("list flights to boston")["input_ids"])[2:-1]
    assert word_pieces(plain, words) != in_sentence  # the library default: every word as a text's first
    assert word_pieces(load_word_tokenizer(tiny_roberta), words) == in_sentence


def test_a_generic_byte_level_tokenizer_is_fixed_in_its_pipeline(tmp_path):
    """ModernBERT style: a tokenizer.json whose ByteLevel pre-tokenizer adds no prefix space, loaded
    by the generic fast class, which has no add_prefix_space option of its own."""
    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train([str(SAMPLE / "train" / "seq.in")], vocab_size=400, min_frequency=1,
              special_tokens=["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"], show_progress=False)
    bpe._tokenizer.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                            pad_token="[PAD]", mask_token="[MASK]").save_pretrained(tmp_path / "tok")
    assert not words_encode_as_in_text(AutoTokenizer.from_pretrained(tmp_path / "tok"))
    fixed = load_word_tokenizer(str(tmp_path / "tok"))
    assert words_encode_as_in_text(fixed)
    fixed.save_pretrained(tmp_path / "run")  # as slu-train saves it with the run
    assert words_encode_as_in_text(AutoTokenizer.from_pretrained(tmp_path / "run"))


def test_a_pre_tokenizer_sequence_is_left_alone_with_a_warning(tmp_path):
    """Llama 3 style: a Split then a ByteLevel without its own regex. A prefix space there would put
    a "Ġ" before every piece of "6:30", so the tokenizer is kept as it is and the user warned."""
    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train([str(SAMPLE / "train" / "seq.in")], vocab_size=400, min_frequency=1,
              special_tokens=["[UNK]", "[CLS]", "[SEP]", "[PAD]"], show_progress=False)
    bpe._tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r" ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(tmp_path / "tok")
    with pytest.warns(UserWarning, match="not pretrained on"):
        tokenizer = load_word_tokenizer(str(tmp_path / "tok"))
    assert isinstance(tokenizer.backend_tokenizer.pre_tokenizer, pre_tokenizers.Sequence)
    assert word_pieces(tokenizer, ["at", "6:30"]) == word_pieces(AutoTokenizer.from_pretrained(tmp_path / "tok"), ["at", "6:30"])


def test_a_wordpiece_tokenizer_is_loaded_unchanged(tiny_encoder):
    words = ["show", "me", "flights"]
    tokenizer = load_word_tokenizer(tiny_encoder)
    assert "add_prefix_space" not in tokenizer.init_kwargs  # not reloaded with options it does not need
    assert word_pieces(tokenizer, words) == word_pieces(AutoTokenizer.from_pretrained(tiny_encoder), words)


@pytest.mark.e2e
def test_a_roberta_run_parses_with_the_tokenization_it_was_trained_with(tiny_roberta, tmp_path):
    run_dir = train(load_recipe(REPO / "recipes" / "quickstart.yaml",
                                tiny_overrides(tiny_roberta, tmp_path / "run") + ["train.epochs=1"]))
    _, tokenizer = load_run(run_dir)
    assert word_pieces(tokenizer, ["to", "boston"]) == word_pieces(load_word_tokenizer(tiny_roberta), ["to", "boston"])
    encoding = tokenizer([["to", "boston"]], is_split_into_words=True)
    pieces = tokenizer.convert_ids_to_tokens(encoding["input_ids"][0])
    firsts = [piece for i, (piece, word) in enumerate(zip(pieces, encoding.word_ids(0)))
              if word is not None and word != encoding.word_ids(0)[i - 1]]
    assert len(firsts) == 2 and all(piece.startswith("Ġ") for piece in firsts)  # each word begins with its space


def test_cls_pooling_is_refused_where_the_classification_token_is_not_first(tmp_path, tiny_recipe, tiny_encoder):
    bpe = ByteLevelBPETokenizer(add_prefix_space=True)
    bpe.train([str(SAMPLE / "train" / "seq.in")], vocab_size=400, min_frequency=1,
              special_tokens=["<unk>", "<sep>", "<cls>", "<pad>"], show_progress=False)
    bpe._tokenizer.post_processor = TemplateProcessing(single="$A <sep> <cls>", special_tokens=[("<sep>", 1), ("<cls>", 2)])
    PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, unk_token="<unk>", sep_token="<sep>", cls_token="<cls>",
                            pad_token="<pad>").save_pretrained(tmp_path / "cls-last")  # as XLNet's
    with pytest.raises(TrainingError, match="pooling=cls.*use model.pooling=mean"):
        train(tiny_recipe("model.pooling=cls", f"model.tokenizer={tmp_path / 'cls-last'}"))
    assert not (tmp_path / "run").exists()  # refused before any run folder was made
    run_dir = train(tiny_recipe("model.pooling=cls", "train.epochs=1"))  # BERT's [CLS] is first
    assert (run_dir / "config.json").exists()

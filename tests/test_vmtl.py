"""The VMTL Bayesian head (METHODS.md section 2) and the calibration metrics every model reports."""

import json
import math
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModel, AutoTokenizer

from slu_feedback.evaluation.metrics import expected_calibration_error, intent_calibration, reliability_bins
from slu_feedback.models import SLUConfig, SLUModel, resolve_encoder
from slu_feedback.models import vmtl
from test_models import ENCODER, INTENTS, SLOTS, labels, make_batch, make_model

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
SHARED = Path(os.environ["SLU_DATA_DIR"]) if os.environ.get("SLU_DATA_DIR") \
    else Path(__file__).resolve().parents[2] / "shared" / "data"


def make_vmtl(seed=0, **kwargs):
    kwargs.setdefault("vmtl", {})
    kwargs["vmtl"] = {"latent_dim": 6, **kwargs["vmtl"]}
    return make_model(seed, head="vmtl", **kwargs)


# -- KL terms -------------------------------------------------------------------------------------
def test_closed_form_kl_is_zero_at_the_prior_and_matches_monte_carlo():
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 4), torch.randn(5, 4) * 0.5
    assert torch.allclose(vmtl.gaussian_kl(mu, logvar, mu, logvar.exp()), torch.zeros(5), atol=1e-6)
    mu_p, var_p = torch.randn(5, 4), torch.rand(5, 4) + 0.3
    closed = vmtl.gaussian_kl(mu, logvar, mu_p, var_p)
    z = mu + (0.5 * logvar).exp() * torch.randn(200_000, 5, 4)
    mc = (vmtl.gaussian_log_prob(z, mu, logvar.exp()) - vmtl.gaussian_log_prob(z, mu_p, var_p)).mean(0)
    assert (closed > 0).all()
    assert torch.allclose(closed, mc, atol=0.05, rtol=0.02), (closed, mc)


def test_single_gaussian_prior_combines_means_and_squared_weights():
    alpha = torch.tensor([0.25, 0.75])
    mu, var = vmtl.combine(alpha, [torch.full((3,), 2.0), torch.zeros(3)], [torch.full((3,), 4.0), torch.ones(3)])
    assert torch.allclose(mu, torch.full((3,), 0.5)) and torch.allclose(var, torch.full((3,), 0.0625 * 4 + 0.5625))


def test_mixture_kl_is_finite_and_matches_the_closed_form_with_one_component():
    torch.manual_seed(1)
    mu, logvar = torch.randn(3, 4), torch.randn(3, 4) * 0.3
    mu_p, var_p = torch.randn(3, 4), torch.rand(3, 4) + 0.5
    z = mu + (0.5 * logvar).exp() * torch.randn(100_000, 3, 4)
    closed = vmtl.gaussian_kl(mu, logvar, mu_p, var_p)
    one = vmtl.mixture_kl_mc(z, mu, logvar, torch.tensor([1.0]), [mu_p], [var_p])
    assert torch.allclose(one, closed, atol=0.05, rtol=0.02), (one, closed)
    # two identical components are the same density
    two = vmtl.mixture_kl_mc(z, mu, logvar, torch.tensor([0.3, 0.7]), [mu_p, mu_p], [var_p, var_p])
    assert torch.allclose(two, one, atol=1e-4)
    # a component of weight 0 (log-weight clamped): still finite
    few = z[:64]
    mixed = vmtl.mixture_kl_mc(few, mu, logvar, torch.tensor([1.0, 0.0]), [mu_p, torch.zeros(3, 4)],
                               [var_p, torch.ones(3, 4)])
    assert torch.isfinite(mixed).all()


def test_prior_weights_sum_to_one_and_get_gradient():
    prior = vmtl.PriorMixture().train()
    alpha = prior.weights(tau=0.7)
    for value in alpha.values():
        assert value.sum().item() == pytest.approx(1.0, abs=1e-6) and (value >= 0).all()
    probabilities = prior.probabilities()
    assert set(probabilities) == {"intent.latent", "slot.latent", "intent.weight", "slot.weight"}
    assert all(sum(p.values()) == pytest.approx(1.0) for p in probabilities.values())
    for form in ("single", "mixture"):
        model = make_vmtl(vmtl={"prior": form}).train()
        model(**make_batch(), **labels()).loss.backward()
        for beta in (model.vmtl_prior.latent_beta, model.vmtl_prior.weight_beta):
            assert beta.grad is not None and (beta.grad.abs().sum(-1) > 0).all(), (form, beta.grad)
        assert model.intent_head.label_embeddings.grad is None, "e_c is fixed"


def _posterior(mu, logvar):
    classes = torch.zeros(2, mu.shape[-1])
    return vmtl.Posterior(mu, logvar, classes, classes, torch.zeros(2), None)


def test_a_peer_task_joins_each_prior_at_the_level_of_the_task():
    """Cross-dataset priors: with all weight on the peer component the KL is the KL to the peer's
    posterior (pooled over words for the intent task, broadcast to words for the slot task); a
    missing peer drops out of the mixture and the other weights are renormalised."""
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]]).bool()
    intent = _posterior(torch.randn(2, 4), 0.3 * torch.randn(2, 4))
    slot = _posterior(torch.randn(2, 3, 4), 0.3 * torch.randn(2, 3, 4))
    peer_intent = _posterior(torch.randn(2, 4), 0.3 * torch.randn(2, 4))
    peer_slot = _posterior(torch.randn(2, 3, 4), 0.3 * torch.randn(2, 3, 4))
    on = lambda i: torch.eye(4)[i]  # noqa: E731  components: other, peer intent, peer slot, N(0, I)
    kl = vmtl.task_kl(intent, [slot, peer_intent, peer_slot], on(1), mask, None, "single")
    assert kl.item() == pytest.approx(vmtl.gaussian_kl(intent.mu, intent.logvar, peer_intent.mu,
                                                       peer_intent.logvar.exp()).mean().item(), rel=1e-5)
    kl = vmtl.task_kl(intent, [slot, peer_intent, peer_slot], on(2), mask, None, "single")
    pooled_mu, pooled_var = vmtl.masked_mean(peer_slot.mu, mask), vmtl.masked_mean(peer_slot.logvar.exp(), mask)
    assert kl.item() == pytest.approx(vmtl.gaussian_kl(intent.mu, intent.logvar, pooled_mu, pooled_var).mean().item(),
                                      rel=1e-5)
    kl = vmtl.task_kl(slot, [intent, peer_intent, peer_slot], on(1), mask, None, "single")
    per_word = vmtl.gaussian_kl(slot.mu, slot.logvar, peer_intent.mu.unsqueeze(1), peer_intent.logvar.exp().unsqueeze(1))
    # mean over the batch's real words (5 here), not per utterance first: a word of the 2-word utterance
    # counts as much as one of the 3-word utterance
    assert kl.item() == pytest.approx(per_word[mask].mean().item(), rel=1e-5)
    assert kl.item() != pytest.approx(torch.stack([per_word[i][mask[i]].mean() for i in range(2)]).mean().item(),
                                      rel=1e-3)
    # a peer equal to the task's own posterior gives KL 0
    assert vmtl.task_kl(slot, [intent, peer_intent, slot], on(2), mask, None, "single").item() == pytest.approx(0, abs=1e-6)
    # missing peers: (0.5, 0.2, 0.1, 0.2) without the two peers is (0.5, 0.2) / 0.7
    alpha = torch.tensor([0.5, 0.2, 0.1, 0.2])
    missing = vmtl.task_kl(intent, [slot, None, None], alpha, mask, None, "single")
    alone = vmtl.task_kl(intent, [slot], torch.tensor([0.5, 0.2]) / 0.7, mask, None, "single")
    assert missing.item() == pytest.approx(alone.item(), rel=1e-6)


def test_joint_vmtl_priors_mix_the_other_datasets_tasks():
    from slu_feedback.models.joint import JointSLUModel

    peers = {"a": ["b.intent", "b.slot"], "b": ["a.intent", "a.slot"]}
    models = {name: make_vmtl(seed=i, vmtl={"peer_tasks": peers[name]}) for i, name in enumerate(("a", "b"))}
    joint = JointSLUModel(models).train()
    a = models["a"]
    assert a.vmtl_prior.components == ("other", "b.intent", "b.slot", "standard_normal")
    assert a.peer_heads() == [models["b"].intent_head, models["b"].slot_head]
    assert not any(name.startswith("heads.a.vmtl_peers") for name, _ in joint.named_parameters())
    out = joint("a", **make_batch(), **labels())
    out.loss.backward()
    assert models["b"].intent_head.training and models["b"].slot_head.dropout.training, "peer modes restored"
    for beta in (a.vmtl_prior.latent_beta, a.vmtl_prior.weight_beta):
        assert (beta.grad[:, 1:3].abs() > 0).all(), "the peer components' weights learn"
    assert all(p.grad is None for n, p in models["b"].named_parameters() if not n.startswith("encoder.")), \
        "the peer's posteriors are detached: dataset a's loss does not train b's heads"
    # the same model without its peer (a dataset folder loaded on its own) still has a finite loss,
    # and a different one: the peer components are gone from its priors
    a.vmtl_peers = {}
    torch.manual_seed(0)
    alone = a(**make_batch(), **labels())
    a.vmtl_peers = {"b": models["b"]}
    torch.manual_seed(0)
    joined = a(**make_batch(), **labels())
    assert torch.isfinite(alone.loss) and alone.loss_parts["kl_z"] != pytest.approx(joined.loss_parts["kl_z"])
    assert alone.loss_parts["intent"] == pytest.approx(joined.loss_parts["intent"]), "same samples, same CE"
    # all prior weight on b.intent: a's KL_z is the KL to b's intent posterior (no dropout), pooled
    # for a.intent and broadcast to the words for a.slot
    a.eval()  # no dropout, no Gumbel noise: softmax(beta) is the weight
    with torch.no_grad():
        a.vmtl_prior.latent_beta.copy_(torch.tensor([[-30.0, 30.0, -30.0, -30.0]] * 2))
        batch = make_batch()
        out = a(**batch, **labels(), iterations=0)
        utterance, words = a.encode(batch["input_ids"], batch["attention_mask"], batch["word_index"])
        _, mine_i = a.intent_head(utterance)
        _, mine_s = a.slot_head(words)
        _, peer = models["b"].intent_head.eval()(utterance)
    mask = batch["word_mask"]
    expected = (vmtl.gaussian_kl(mine_i.mu, mine_i.logvar, peer.mu, peer.logvar.exp()).mean()
                + vmtl.gaussian_kl(mine_s.mu, mine_s.logvar, peer.mu.unsqueeze(1),
                                   peer.logvar.exp().unsqueeze(1))[mask].mean())
    assert out.loss_parts["kl_z"] == pytest.approx(expected.item(), rel=1e-4)


# -- label names ----------------------------------------------------------------------------------
def test_label_texts():
    assert vmtl.label_text("B-fromloc.city_name") == "from location city name"
    assert vmtl.label_text("I-toloc.airport_code") == "to location airport code"
    assert vmtl.label_text("B-depart_time.period_of_day") == "departure time period of day"
    assert vmtl.label_text("atis_flight") == "flight"
    assert vmtl.label_text("atis_flight#atis_airfare") == "flight and airfare"
    assert vmtl.label_text("PlayMusic") == "play music"
    assert vmtl.label_text("B-timeRange") == "time range"
    assert vmtl.label_text("O") == "outside"
    assert vmtl.label_text("B-x", {"x": "thing"}) == vmtl.label_text("I-x", {"x": "thing"}) == "thing"
    assert vmtl.label_text("atis_flight", {"atis_flight": "a flight"}) == "a flight"
    assert [vmtl.label_role(x) for x in ("atis_flight", "O", "B-x", "I-x")] == [0, 1, 2, 3]


def label_sets():
    from slu_feedback.data import build_label_maps, load_splits

    sets = {"sample": build_label_maps(load_splits(SAMPLE)["train"])}
    for name in ("atis", "snips"):
        if (SHARED / name / "train").is_dir():
            sets[name] = build_label_maps(load_splits(SHARED / name)["train"])
    return sets


@pytest.mark.parametrize("name", ["sample", "atis", "snips"])
def test_every_label_of_the_data_sets_gets_a_text_and_an_embedding(name):
    sets = label_sets()
    if name not in sets:
        pytest.skip(f"{name} not found under {SHARED} (set SLU_DATA_DIR)")
    maps = sets[name]
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder("minilm-l6"))
    table = torch.randn(len(tokenizer), 8)
    for group in (maps.intents, maps.slots):
        texts = [vmtl.label_text(x) for x in group]
        for label, text in zip(group, texts):
            pieces = tokenizer.tokenize(text)
            assert text.strip() and pieces and tokenizer.unk_token not in pieces, (label, text, pieces)
        # labels of different types get different texts (B-x and I-x share one)
        types = {x[2:] if vmtl.label_role(x) > 1 else x: t for x, t in zip(group, texts)}
        assert len(set(types.values())) == len(types), types
        e = vmtl.embed_texts(texts, tokenizer, table)
        assert e.shape == (len(group), 8) and torch.isfinite(e).all()
    text = vmtl.label_text(maps.slots[1])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert torch.allclose(vmtl.embed_texts([text], tokenizer, table)[0], table[ids].mean(0))


def test_from_encoder_embeds_the_label_names_with_the_word_embeddings(tiny_encoder):
    config = SLUConfig(encoder=tiny_encoder, encoder_config=AutoModel.from_pretrained(tiny_encoder).config.to_dict(),
                       intent_labels=["play_music", "get_weather"], slot_labels=["O", "B-artist", "I-artist"],
                       head_hidden=8, head="vmtl", vmtl={"latent_dim": 4}, label_names={"get_weather": "weather"})
    model = SLUModel.from_encoder(config, tiny_encoder)
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    table = model.encoder.model.get_input_embeddings().weight
    ids = tokenizer("weather", add_special_tokens=False)["input_ids"]
    assert torch.allclose(model.intent_head.label_embeddings[1], table[ids].mean(0))
    assert torch.equal(model.slot_head.label_embeddings[1], model.slot_head.label_embeddings[2])  # B-/I- share
    assert not model.intent_head.label_embeddings.requires_grad
    assert any(k.endswith("label_embeddings") for k in model.state_dict()), "e_c is saved with the model"


def test_joint_bilstm_vmtl_embeds_every_datasets_label_names_with_the_shared_table(tiny_encoder):
    """A joint run keeps the first dataset's encoder: the other datasets' e_c must come from its
    word embeddings, not from the random tables of the encoders they were built with."""
    from slu_feedback.models.joint import JointSLUModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    models = {}
    for seed, name in enumerate(("a", "b")):
        torch.manual_seed(seed)
        config = SLUConfig(encoder_type="bilstm", vocab_size=len(tokenizer), embedding_dim=8, lstm_hidden=8,
                           head_hidden=8, intent_labels=["play_music", "get_weather"],
                           slot_labels=["O", "B-artist", "I-artist"], head="vmtl", vmtl={"latent_dim": 4})
        models[name] = SLUModel.from_encoder(config, tokenizer=tokenizer)
    before = models["b"].intent_head.label_embeddings.clone()
    JointSLUModel(models, tokenizer=tokenizer)
    table = models["a"].encoder.embedding.weight
    for head in (models["b"].intent_head, models["b"].slot_head):
        assert torch.allclose(head.label_embeddings, vmtl.embed_texts(head.label_texts, tokenizer, table))
    assert not torch.allclose(before, models["b"].intent_head.label_embeddings)
    assert torch.equal(models["a"].intent_head.label_embeddings, models["b"].intent_head.label_embeddings)


# -- the model ------------------------------------------------------------------------------------
HEAD_KEYS = ["intent_head.hidden.weight", "intent_head.hidden.bias", "intent_head.out.weight", "intent_head.out.bias",
             "slot_head.hidden.weight", "slot_head.hidden.bias", "slot_head.out.weight", "slot_head.out.bias"]


@pytest.mark.parametrize("kwargs", [{}, {"feedback": {"iterations": 2}}, {"slot_decoder": "crf"}])
def test_the_deterministic_head_is_the_model_as_before(kwargs):
    default, explicit = make_model(**kwargs), make_model(head="deterministic", **kwargs)
    keys = [k for k in default.state_dict() if not k.startswith(("encoder.", "crf.", "slot_to_intent", "intent_to_slot"))]
    assert keys == HEAD_KEYS  # the state dict of the commit before the Bayesian head
    assert list(default.state_dict()) == list(explicit.state_dict())
    assert all(torch.equal(v, explicit.state_dict()[k]) for k, v in default.state_dict().items())
    for mode in ("train", "eval"):
        outs = []
        for model in (default, explicit):
            getattr(model, mode)()
            torch.manual_seed(3)
            outs.append(model(**make_batch(), **labels()))
        assert torch.equal(outs[0].loss, outs[1].loss) and torch.equal(outs[0].intent_logits, outs[1].intent_logits)
    assert default.prior_probabilities() == {} and not hasattr(default, "vmtl_prior")


@pytest.mark.parametrize("kwargs", [{}, {"encoder_type": "bilstm", "vocab_size": 50, "embedding_dim": 8, "lstm_hidden": 8}])
def test_the_layers_of_the_bilinear_logits_start_at_fan_in_scale(kwargs):
    """mu_z and the generated class weights both start at std 1/sqrt(fan_in), the generator's two
    layers included (transformers skips `_init_weights` on a module without parameters of its own)."""
    model = make_vmtl(vmtl={"latent_dim": 64}, **kwargs)
    for head in (model.intent_head, model.slot_head):
        for layer in (head.latent, head.generator.hidden, head.generator.out):
            expected = layer.weight.shape[1] ** -0.5
            assert layer.weight.std().item() == pytest.approx(expected, rel=0.25), layer
            assert torch.count_nonzero(layer.bias) == 0


def test_vmtl_model_shapes_losses_and_refusals():
    model = make_vmtl().train()
    out = model(**make_batch(), **labels())
    assert out.intent_logits.shape == (3, 3) and out.slot_logits.shape == (3, 5, 4)
    assert {"intent", "slot", "kl_z", "kl_w"} <= set(out.loss_parts) and torch.isfinite(out.loss)
    model.kl_weight = 0.0  # KL warm-up at its start: only the Monte Carlo cross-entropy is left
    torch.manual_seed(0)
    ce_only = model(**make_batch(), **labels())
    assert ce_only.loss.item() == pytest.approx(ce_only.loss_parts["intent"] + ce_only.loss_parts["slot"], rel=1e-5)
    with pytest.raises(ValueError, match="crf"):
        make_vmtl(slot_decoder="crf")
    with pytest.raises(ValueError, match="prior"):
        make_vmtl(vmtl={"prior": "triple"})


def test_vmtl_with_feedback_zero_iterations_is_the_vmtl_base_model():
    base = make_vmtl().eval()
    looped = make_vmtl(seed=7, feedback={"iterations": 2}).eval()
    missing, unexpected = looped.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("slot_to_intent", "intent_to_slot")) for k in missing)
    a, b = base(**make_batch()), looped(**make_batch(), iterations=0)
    assert torch.equal(a.intent_logits, b.intent_logits) and torch.equal(a.slot_logits, b.slot_logits)
    looped.train()
    out = looped(**make_batch(), **labels())
    out.loss.backward()
    assert "conv" in out.loss_parts and looped.slot_to_intent.beta.grad is not None


def test_mc_prediction_is_a_repeatable_average_of_samples():
    model = make_vmtl(vmtl={"predict": "mc", "predict_samples": 8}).eval()
    a, b = model(**make_batch()), model(**make_batch())
    assert torch.equal(a.intent_logits, b.intent_logits), "fixed-seed MC samples at evaluation"
    probs = a.intent_logits.softmax(-1)
    assert torch.allclose(probs.sum(-1), torch.ones(3)) and torch.allclose(a.intent_logits.exp(), probs, atol=1e-6)
    mean = make_vmtl(vmtl={"predict": "mean"}).eval()(**make_batch())
    assert not torch.equal(mean.intent_logits, a.intent_logits)


@pytest.mark.parametrize("kwargs", [{}, {"feedback": {"iterations": 1}}])
def test_an_mc_prediction_does_not_depend_on_the_batch_it_is_in(kwargs):
    """slu-parse on one utterance and slu-eval on a padded batch of 64 must agree: the MC draws
    are shared by every utterance and word instead of drawn per batch position."""
    model = make_vmtl(vmtl={"predict": "mc", "predict_samples": 8}, **kwargs).eval()
    batch = make_batch()
    together = model(**batch)
    for i, width in ((0, 3), (2, 4)):  # utterance i alone, cut to its own words
        alone = model(**{k: v[i:i + 1] for k, v in batch.items()} | {"word_index": batch["word_index"][i:i + 1, :width],
                                                                        "word_mask": batch["word_mask"][i:i + 1, :width]})
        assert torch.allclose(alone.intent_logits[0], together.intent_logits[i], atol=1e-5)
        assert torch.allclose(alone.slot_logits[0], together.slot_logits[i, :width], atol=1e-5)


def test_mc_prediction_draws_predict_samples_not_the_training_samples():
    def intent_logits(**vmtl):
        return make_vmtl(vmtl={"predict": "mc", **vmtl}).eval()(**make_batch()).intent_logits

    assert make_vmtl().config.vmtl["predict"] == "mc", "calibrated MC prediction is the default"
    assert torch.equal(intent_logits(samples=2, predict_samples=8), intent_logits(samples=16, predict_samples=8))
    assert not torch.equal(intent_logits(predict_samples=1), intent_logits(predict_samples=8))


@pytest.mark.parametrize("kwargs", [{}, {"vmtl": {"predict": "mc", "prior": "mixture"}, "feedback": {"iterations": 1}},
                                    {"encoder_type": "bilstm", "vocab_size": 50, "embedding_dim": 8, "lstm_hidden": 8}])
def test_vmtl_save_and_reload_give_identical_outputs(tmp_path, kwargs):
    model = make_vmtl(**kwargs).eval()
    with torch.no_grad():  # make the saved state distinct from any initialisation
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.head == "vmtl" and reloaded.config.vmtl == model.config.vmtl
    for name, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[name]), name
    a, b = model(**make_batch()), reloaded(**make_batch())
    assert torch.equal(a.intent_logits, b.intent_logits) and torch.equal(a.slot_logits, b.slot_logits)
    assert reloaded.prior_probabilities() == model.prior_probabilities()


def test_vmtl_recipes_build_their_models():
    from slu_feedback.training.recipe import load_recipe

    for path in sorted((REPO / "recipes").glob("*vmtl*.yaml")):
        m = load_recipe(path)["model"]
        config = SLUConfig(encoder_config=ENCODER, intent_labels=INTENTS, slot_labels=SLOTS, head=m["head"],
                           vmtl=m["vmtl"], label_names=m["label_names"], head_hidden=8)
        assert config.head == "vmtl", path
        SLUModel(config)
    for path in sorted((REPO / "recipes").glob("*pct.yaml")):
        assert 0 < load_recipe(path)["data"]["train_fraction"] < 1, path


# -- calibration metrics --------------------------------------------------------------------------
def test_ece_and_nll_on_a_hand_computed_example():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.3 (wrong, gold unknown to the model)
    probs = [[0.9, 0.1, 0.0], [0.9, 0.05, 0.05], [0.2, 0.6, 0.2], [0.3, 0.3, 0.4]]
    gold = ["a", "b", "b", "zzz"]
    out = intent_calibration(probs, gold, ["a", "b", "c"])
    # three occupied bins (the top-1 of the last row is "c", 0.4):
    # |1/2 - 0.9| * 2/4 + |1 - 0.6| * 1/4 + |0 - 0.4| * 1/4 = 0.2 + 0.1 + 0.1
    assert out["intent_ece"] == pytest.approx(0.4)
    assert out["intent_nll"] == pytest.approx(-(math.log(0.9) + math.log(0.05) + math.log(0.6)) / 3)
    assert out["intent_nll_n"] == 3
    bins = reliability_bins([0.9, 0.9, 0.6, 0.4], [True, False, True, False])
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 4 and bins[13]["accuracy"] == 0.5
    assert expected_calibration_error([1.0, 1.0], [True, True]) == 0.0
    assert expected_calibration_error([], []) == 0.0


# -- end to end -----------------------------------------------------------------------------------
@pytest.mark.e2e
def test_a_tiny_vmtl_model_trains_evaluates_and_parses(tiny_recipe):
    from slu_feedback.cli.evaluate import main as eval_main
    from slu_feedback.inference.parser import SLUParser
    from slu_feedback.training.trainer import train

    run = train(tiny_recipe("model.head=vmtl", "model.vmtl.latent_dim=16", "train.epochs=1", "train.log_every=1",
                            "model.feedback.iterations=1"))
    results = json.loads((run / "all_results.json").read_text())
    assert set(results["prior_weights"]) == {"intent.latent", "slot.latent", "intent.weight", "slot.weight"}
    assert {"intent_ece", "intent_nll"} <= set(results["validation"])
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["type"] == "step"]
    assert steps and all("prior" in r and "loss_kl_z" in r for r in steps)
    kl = [r["kl_weight"] for r in steps]
    assert kl == sorted(kl) and 0 <= kl[0] < 1, "the KL weight warms up"
    assert (run / "training_curves.png").stat().st_size > 0

    result = CliRunner().invoke(eval_main, [str(run), "--split", "test"])
    assert result.exit_code == 0, result.output
    assert "ECE" in result.output and "NLL" in result.output
    pytest.importorskip("onnx")
    from slu_feedback.cli.export import main as export_main

    result = CliRunner().invoke(export_main, [str(run), "--format", "onnx"])  # one line, not a trace dump
    assert result.exit_code == 1 and "does not support model.head=vmtl" in result.output and len(result.output) < 300
    report = json.loads((run / "eval_test" / "metrics.json").read_text())
    m = report["metrics"]
    assert 0 <= m["intent_ece"] <= 1 and m["intent_nll"] > 0
    assert (run / "eval_test" / "reliability.png").stat().st_size > 0
    result = CliRunner().invoke(eval_main, [str(run), "--split", "test", "--predict", "mean", "--out", str(run / "mean")])
    assert result.exit_code == 0, result.output
    # the default (vmtl.predict: mc) averages sampled weights; mean uses the posterior means
    mc_scores = [json.loads(x)["intent_score"] for x in (run / "eval_test" / "predictions.jsonl").read_text().splitlines()]
    mean_scores = [json.loads(x)["intent_score"] for x in (run / "mean" / "predictions.jsonl").read_text().splitlines()]
    assert len(mc_scores) == len(mean_scores) and mc_scores != mean_scores

    parser = SLUParser.from_pretrained(run)
    parsed = parser(["play some jazz by miles davis", ""])
    assert parsed[0]["intent_uncertainty"] >= 0 and parsed[1]["intent_uncertainty"] is None
    assert all(slot["uncertainty"] >= 0 for slot in parsed[0]["slots"])


def test_weight_decay_spares_the_prior_logits_and_role_offsets():
    """The prior mixtures' logits are not layer weights: decaying them would pull every mixture
    towards uniform. Layer weights of the same head keep the recipe's decay."""
    from slu_feedback.training.recipe import load_recipe
    from slu_feedback.training.trainer import param_groups

    model = make_vmtl()
    recipe = load_recipe(None, ["data.path=x", "optim.weight_decay=0.05"])
    decay = {id(p): g["weight_decay"] for g in param_groups(model, recipe) for p in g["params"]}
    names = {n: decay[id(p)] for n, p in model.named_parameters() if p.requires_grad}
    spared = [n for n in names if n.endswith(("latent_beta", "weight_beta", "role_offset"))]
    assert any(n.endswith("role_offset") for n in spared) and any(n.endswith("latent_beta") for n in spared)
    assert all(names[n] == 0.0 for n in spared)
    assert names["intent_head.generator.out.weight"] == 0.05

"""Model invariants, including those METHODS.md lists for the feedback loop."""

import itertools

import pytest
import torch
from transformers import AutoModel, BertConfig

from slu_feedback.models import SLUConfig, SLUModel
from slu_feedback.models.crf import CRF
from slu_feedback.models.feedback import FeedbackGate, convergence_loss, js_divergence, step_sizes

INTENTS = ["a", "b", "c"]
SLOTS = ["O", "B-x", "I-x", "B-y"]
ENCODER = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32).to_dict()


def make_model(seed=0, **kwargs):
    torch.manual_seed(seed)
    config = SLUConfig(encoder="tiny", encoder_config=ENCODER, intent_labels=INTENTS, slot_labels=SLOTS,
                       head_hidden=8, **kwargs)
    return SLUModel(config)


def make_batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, 50, (3, 8), generator=g)
    attention_mask = torch.ones(3, 8, dtype=torch.long)
    attention_mask[0, 5:] = 0
    word_index = torch.tensor([[1, 2, 3, 0, 0], [1, 2, 4, 5, 6], [1, 3, 4, 5, 0]])
    word_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]).bool()
    return {"input_ids": input_ids, "attention_mask": attention_mask, "word_index": word_index, "word_mask": word_mask}


def labels():
    return {"intent_labels": torch.tensor([0, 2, -100]),
            "slot_labels": torch.tensor([[0, 1, 2, -100, -100], [3, 0, 0, 1, 0], [0, 0, 1, 2, -100]])}


@pytest.mark.parametrize("decoder", ["softmax", "crf"])
def test_zero_iterations_is_exactly_the_base_model(decoder):
    base = make_model(slot_decoder=decoder).eval()
    looped = make_model(seed=7, slot_decoder=decoder, feedback={"iterations": 3}).eval()
    missing, unexpected = looped.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("slot_to_intent", "intent_to_slot")) for k in missing)
    batch = make_batch()
    a = base(**batch, **labels())
    b = looped(**batch, **labels(), iterations=0)
    assert torch.equal(a.intent_logits, b.intent_logits)
    assert torch.equal(a.slot_logits, b.slot_logits)
    assert torch.equal(a.loss, b.loss)
    c = looped(**batch, iterations=3)  # and feedback really changes the outputs
    assert not torch.allclose(a.intent_logits, c.intent_logits)


def test_convergence_loss_zero_for_constant_outputs_and_positive_for_growing_steps():
    p = torch.softmax(torch.randn(4, 5), -1)
    s = torch.softmax(torch.randn(4, 6, 3), -1)
    mask = torch.ones(4, 6, dtype=torch.bool)
    constant = step_sizes([p, p, p, p], [s, s, s, s], mask)
    assert constant.shape == (2, 3, 4)
    assert convergence_loss(constant).item() == pytest.approx(0.0, abs=1e-7)
    # outputs that drift further at every iteration: steps grow, so the loss is positive
    q = [torch.softmax(torch.randn(4, 5) * 0 + torch.arange(5.0) * k, -1) for k in (0.0, 0.1, 0.5, 2.0)]
    growing = step_sizes(q, [s] * 4, mask)
    assert (growing[0, 1:] > growing[0, :-1]).all()
    assert convergence_loss(growing).item() > growing[0, -1].mean().item()  # the growth term adds to the last step
    # a shrinking sequence is only charged its last step
    shrinking = growing.flip(1)
    assert convergence_loss(shrinking).item() == pytest.approx(shrinking[:, -1].mean(-1).sum().item(), rel=1e-5)


def test_js_divergence_properties():
    p, q = torch.softmax(torch.randn(10, 4), -1), torch.softmax(torch.randn(10, 4), -1)
    assert torch.allclose(js_divergence(p, q), js_divergence(q, p))
    assert (js_divergence(p, q) >= 0).all() and (js_divergence(p, q) <= torch.log(torch.tensor(2.0)) + 1e-6).all()
    assert torch.allclose(js_divergence(p, p), torch.zeros(10), atol=1e-7)


@pytest.mark.parametrize("mode", ["gumbel", "soft"])
def test_gate_weights_sum_to_one_and_get_gradient(mode):
    gate = FeedbackGate(4, (16, 8, 3), mode).train()
    pi = gate.weights(tau=0.5)
    assert pi.sum().item() == pytest.approx(1.0, abs=1e-6) and (pi >= 0).all()
    additions = gate(torch.softmax(torch.randn(2, 4), -1), pi)
    sum(a.pow(2).sum() for a in additions).backward()
    assert gate.beta.grad is not None and gate.beta.grad.abs().sum() > 0


def test_gate_is_hard_and_deterministic_at_evaluation():
    gate = FeedbackGate(4, (16, 8, 3), "gumbel")
    with torch.no_grad():
        gate.beta.copy_(torch.tensor([0.1, 0.9, 0.3]))
    gate.eval()
    assert gate.weights(1.0).tolist() == [0.0, 1.0, 0.0]
    additions = gate(torch.rand(2, 4), gate.weights(1.0))
    assert additions[0] is None and additions[2] is None and additions[1].shape == (2, 8)
    fixed = FeedbackGate(4, (16, 8, 3), "fixed:2").train()
    assert fixed.weights(1.0).tolist() == [0.0, 0.0, 1.0]
    with pytest.raises(ValueError):
        FeedbackGate(4, (16, 8, 3), "fixed:3")


@pytest.mark.parametrize("gate", ["gumbel", "soft", "fixed:1"])
def test_only_a_fixed_gate_leaves_parameters_without_gradient(gate):
    """Single-dataset runs use DDP with find_unused_parameters=False, which needs every parameter
    to get a gradient; a fixed gate's logits get none, so for it the trainer asks DDP to allow that."""
    from slu_feedback.training.trainer import new_accelerator

    model = make_model(feedback={"iterations": 2, "gate": gate}).train()
    model(**make_batch(), **labels()).loss.backward()
    idle = [name for name, p in model.named_parameters() if p.grad is None]
    assert idle == ([] if gate != "fixed:1" else ["slot_to_intent.beta", "intent_to_slot.beta"])
    assert new_accelerator(1, joint=False, unused_parameters=True).ddp_handler.find_unused_parameters
    assert new_accelerator(1, joint=False).ddp_handler is None


def test_a_misspelt_argument_is_an_error_not_a_missing_loss():
    model = make_model()
    batch = make_batch()
    with pytest.raises(TypeError, match="unexpected argument\\(s\\) labels; it takes input_ids"):
        model(**batch, labels=torch.zeros(len(batch["input_ids"]), dtype=torch.long))
    assert model(**batch, return_dict=True, output_hidden_states=False).intent_logits is not None  # HF's flags


def test_a_model_without_feedback_refuses_to_iterate():
    with pytest.raises(ValueError, match="max_iterations needs feedback.iterations"):
        make_model(feedback={"iterations": 0, "max_iterations": 2})
    with pytest.raises(ValueError, match="trained without feedback"):
        make_model().eval()(**make_batch(), iterations=2)


def test_gates_are_drawn_once_per_forward_pass(monkeypatch):
    """METHODS.md: pi is resampled each (training) step, so all K rounds of one step infuse at the
    same points; the convergence loss then sees the outputs' trend, not fresh gate noise."""
    model = make_model(feedback={"iterations": 3}).train()
    draws = []
    original = FeedbackGate.weights
    monkeypatch.setattr(FeedbackGate, "weights", lambda gate, tau: draws.append(original(gate, tau)) or draws[-1])
    model(**make_batch(), **labels())
    assert len(draws) == 2  # one per direction, not one per round


def test_feedback_model_gates_receive_gradient_from_the_loss():
    model = make_model(feedback={"iterations": 2}).train()
    out = model(**make_batch(), **labels())
    out.loss.backward()
    for gate in (model.slot_to_intent, model.intent_to_slot):
        assert gate.beta.grad is not None and gate.beta.grad.abs().sum() > 0
    assert "conv" in out.loss_parts and out.steps.shape == (2, 2, 3)


def test_evaluation_is_deterministic_and_counts_iterations():
    model = make_model(feedback={"iterations": 3, "eps": 0.0}).eval()
    a, b = model(**make_batch()), model(**make_batch())
    assert torch.equal(a.intent_logits, b.intent_logits) and torch.equal(a.slot_logits, b.slot_logits)
    assert a.iterations.tolist() == [3, 3, 3]
    adaptive = make_model(feedback={"iterations": 3, "eps": 10.0}).eval()  # everything "converges" at k=1
    assert adaptive(**make_batch()).iterations.tolist() == [1, 1, 1]
    out = adaptive(**make_batch(), return_iterations=True)
    assert torch.equal(out.intent_logits, out.all_intent_logits[1])


def random_crf(num_tags: int) -> CRF:
    """A CRF with random (not zero) start, end and transition scores; seeds torch with 0."""
    torch.manual_seed(0)
    crf = CRF(num_tags)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    return crf


def test_crf_matches_brute_force():
    crf = random_crf(3)
    emissions = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]).bool()

    def score(b, path):
        s = crf.start[path[0]] + emissions[b, 0, path[0]]
        for i in range(1, len(path)):
            s = s + crf.transitions[path[i - 1], path[i]] + emissions[b, i, path[i]]
        return s + crf.end[path[-1]]

    tags = torch.tensor([[0, 2, 1, 0], [1, 1, 0, 2]])
    expected = []
    best = []
    for b, n in enumerate(mask.sum(1).tolist()):
        paths = list(itertools.product(range(3), repeat=n))
        scores = torch.stack([score(b, p) for p in paths])
        expected.append(torch.logsumexp(scores, 0) - score(b, tags[b, :n].tolist()))
        best.append(list(paths[int(scores.argmax())]))
    assert crf.neg_log_likelihood(emissions, tags, mask).item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)
    decoded = crf.decode(emissions, mask)
    assert decoded[0, :3].tolist() == best[0] and decoded[1].tolist() == best[1]


def test_crf_partition_matches_logsumexp_recursion_at_large_scores():
    """The matrix-product forward algorithm equals the plain logsumexp recursion, also where scores
    span hundreds of nats (where a naive exp would overflow), with finite gradients."""
    crf = random_crf(6)
    with torch.no_grad():
        crf.transitions.mul_(30)
    emissions = (torch.randn(3, 7, 6) * 100).requires_grad_()
    mask = torch.arange(7)[None] < torch.tensor([7, 4, 1])[:, None]
    alpha = crf.start + emissions[:, 0]
    for i in range(1, 7):
        nxt = torch.logsumexp(alpha.unsqueeze(2) + crf.transitions + emissions[:, i].unsqueeze(1), dim=1)
        alpha = torch.where(mask[:, i].unsqueeze(1), nxt, alpha)
    expected = torch.logsumexp(alpha + crf.end, dim=1)
    actual = crf._log_partition(emissions, mask)
    assert torch.allclose(actual, expected, rtol=1e-5)
    grad, = torch.autograd.grad(actual.sum(), emissions)
    assert torch.isfinite(grad).all() and torch.allclose(grad.sum(2)[mask], torch.ones(int(mask.sum())), atol=1e-4)


@pytest.mark.parametrize("kwargs", [{}, {"slot_decoder": "crf", "feedback": {"iterations": 2}},
                                    {"encoder_type": "bilstm", "vocab_size": 50, "embedding_dim": 8, "lstm_hidden": 8,
                                     "feedback": {"iterations": 1, "gate": "fixed:1"}}])
def test_save_and_reload_give_identical_outputs(tmp_path, kwargs):
    model = make_model(**kwargs).eval()
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(reloaded) is SLUModel and reloaded.config.feedback == model.config.feedback
    a, b = model(**make_batch()), reloaded(**make_batch())
    assert torch.equal(a.intent_logits, b.intent_logits) and torch.equal(a.slot_logits, b.slot_logits)
    mask = make_batch()["word_mask"]
    assert torch.equal(model.decode_slots(a.slot_logits, mask), reloaded.decode_slots(b.slot_logits, mask))


def test_bad_config_values_are_rejected():
    with pytest.raises(ValueError, match="slot_decoder"):
        SLUConfig(slot_decoder="hmm")
    with pytest.raises(ValueError, match="gate"):
        make_model(feedback={"iterations": 1, "gate": "sometimes"})


def test_length_grouped_batches_cover_every_example_once_and_group_lengths():
    from slu_feedback.data.features import LengthGroupedBatches

    lengths = [int(x) for x in torch.randint(1, 40, (523,), generator=torch.Generator().manual_seed(0))]
    sampler = LengthGroupedBatches(lengths, batch_size=16, window=4)
    torch.manual_seed(0)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(523))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 10  # random batches of 16 from 1..39 would spread ~30
    torch.manual_seed(0)
    assert list(sampler) == batches, "deterministic under a seed"


def test_bio_constrained_decoding_never_starts_a_span_with_I():
    from slu_feedback.models.crf import bio_transitions

    allowed, first = bio_transitions(SLOTS)  # O B-x I-x B-y
    assert not allowed[0, 2] and allowed[1, 2] and allowed[2, 2] and not allowed[3, 2] and not first[2]
    for decoder in ("softmax", "crf"):
        model = make_model(slot_decoder=decoder).eval()
        logits = torch.full((1, 4, 4), -5.0)
        logits[0, :, 2] = 5.0  # every word prefers I-x
        logits[0, 0, 1] = 4.0  # the first word's next best is B-x
        mask = torch.ones(1, 4, dtype=torch.bool)
        assert model.decode_slots(logits, mask)[0].tolist() == [1, 2, 2, 2]
        model.config.bio_constraints = False
        if decoder == "softmax":
            assert model.decode_slots(logits, mask)[0].tolist() == [2, 2, 2, 2]


def test_intent_slot_constraints_decode_only_types_seen_with_the_predicted_intent(tmp_path):
    from slu_feedback.data import slot_types_by_intent, to_dataset

    train = to_dataset([{"tokens": ["w1", "w2"], "slots": s, "intent": i, "text": "w1 w2", "offsets": [[0, 2], [3, 5]]}
                        for s, i in [(["B-x", "O"], "a"), (["O", "B-y"], "b"), (["O", "O"], "c")]])
    types = slot_types_by_intent(train)
    assert types == {"a": ["x"], "b": ["y"], "c": []}
    logits = torch.full((2, 3, 4), -5.0)  # O B-x I-x B-y; both utterances prefer B-y, then B-x, then O
    logits[:, 0, 3], logits[:, 0, 1], logits[:, :, 0] = 5.0, 4.0, 0.0
    mask = torch.ones(2, 3, dtype=torch.bool)
    intents = torch.tensor([0, 1])  # a (x only), b (y only)
    for decoder in ("softmax", "crf"):
        model = make_model(slot_decoder=decoder, intent_slot_constraints=True, slot_types_by_intent=types).eval()
        assert model.decode_slots(logits, mask, intents).tolist() == [[1, 0, 0], [3, 0, 0]]
        assert model.decode_slots(logits, mask, torch.tensor([2, 2])).tolist() == [[0, 0, 0]] * 2  # c: no slots
        assert model.decode_slots(logits, mask).tolist() == [[3, 0, 0]] * 2  # no intents given: unconstrained
        model.config.intent_slot_constraints = False
        assert model.decode_slots(logits, mask, intents).tolist() == [[3, 0, 0]] * 2
    model.save_pretrained(tmp_path)
    assert SLUModel.from_pretrained(tmp_path).config.slot_types_by_intent == types
    # a #-joined label also takes its parts' types: "a#b" was seen with x only, yet y decodes
    joined = SLUModel(SLUConfig(encoder="tiny", encoder_config=ENCODER, intent_labels=["a", "a#b", "b"],
                                slot_labels=SLOTS, head_hidden=8, intent_slot_constraints=True,
                                slot_types_by_intent={"a": ["x"], "a#b": ["x"], "b": ["y"]})).eval()
    assert joined.decode_slots(logits, mask, torch.tensor([1, 0])).tolist() == [[3, 0, 0], [1, 0, 0]]
    with pytest.raises(ValueError, match="no record of the slot types"):
        make_model(intent_slot_constraints=True).decode_slots(logits, mask, intents)


def test_gate_logits_get_their_own_learning_rate():
    from slu_feedback.training.recipe import load_recipe
    from slu_feedback.training.trainer import param_groups

    model = make_model(feedback={"iterations": 2})
    betas = {id(model.slot_to_intent.beta), id(model.intent_to_slot.beta)}

    def lr_of(recipe):
        by_param = {id(p): g["lr"] for g in param_groups(model, recipe) for p in g["params"]}
        return ({by_param[b] for b in betas}, by_param[id(model.slot_to_intent.amplifiers[0].weight)],
                by_param[id(next(model.encoder.parameters()))])

    assert lr_of(load_recipe(None, ["data.path=x", "optim.lr=1e-4", "optim.head_lr=1e-3"])) == ({1e-3}, 1e-3, 1e-4)
    assert lr_of(load_recipe(None, ["data.path=x", "optim.lr=1e-4", "optim.head_lr=1e-3", "optim.gate_lr=0.05"])) \
        == ({0.05}, 1e-3, 1e-4)


@pytest.mark.parametrize("kwargs", [{}, {"slot_decoder": "crf"}, {"feedback": {"iterations": 2}},
                                    {"head": "vmtl"}])
def test_a_batch_without_intent_labels_has_a_finite_loss(kwargs):
    """Partially annotated data (null intent in JSONL; sample-level MTIF pruning) can give a batch
    with no intent label at all: its intent loss is 0, not NaN, and the slot head still learns."""
    model = make_model(**kwargs).train()
    torch.manual_seed(0)
    loss = model(**make_batch(), intent_labels=torch.full((3,), -100), slot_labels=labels()["slot_labels"]).loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert any(n.startswith("slot_head") and torch.count_nonzero(g) for n, g in grads.items())
    if not kwargs:  # without feedback the intent head's only teacher is the intent loss
        assert all(torch.count_nonzero(g) == 0 for n, g in grads.items() if n.startswith("intent_head"))


@pytest.mark.parametrize("decoder", ["softmax", "crf"])
def test_an_utterance_without_slot_labels_adds_nothing_to_the_slot_loss(decoder):
    model = make_model(slot_decoder=decoder).eval()
    with torch.no_grad():  # confident, different outputs per utterance (a fresh head is near uniform)
        model.slot_head.out.weight.normal_(0, 5.0)
    no_intents = torch.full((3,), -100)  # the loss is then the slot loss alone
    slots = labels()["slot_labels"].clone()
    slots[1] = -100
    partial = model(**make_batch(), intent_labels=no_intents, slot_labels=slots).loss
    rows = [0, 2]
    without = model(**{k: v[rows] for k, v in make_batch().items()}, intent_labels=no_intents[rows],
                    slot_labels=slots[rows]).loss
    assert partial.item() == pytest.approx(without.item(), rel=1e-5)
    assert partial.item() != pytest.approx(model(**make_batch(), intent_labels=no_intents,
                                                 slot_labels=labels()["slot_labels"]).loss.item(), rel=1e-3)


def test_crf_loss_ignores_utterances_without_slot_labels():
    crf = random_crf(3)
    emissions = torch.randn(3, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]]).bool()
    tags = torch.tensor([[0, 1, 2, -100], [2, 0, 1, 1], [1, 1, -100, -100]])
    unlabelled = tags.clone()
    unlabelled[1] = -100
    expected = crf.neg_log_likelihood(emissions[[0, 2]], tags[[0, 2]], mask[[0, 2]])
    assert crf.neg_log_likelihood(emissions, unlabelled, mask).item() == pytest.approx(expected.item(), rel=1e-6)
    assert crf.neg_log_likelihood(emissions, torch.full_like(tags, -100), mask).item() == 0.0


def test_an_utterance_without_words_weighs_nothing_in_the_crf_loss():
    model = make_model(slot_decoder="crf", feedback={"iterations": 2})
    batch, gold = make_batch(), labels()
    batch["word_mask"][0] = False  # through the API only: the readers refuse empty utterances
    gold["slot_labels"][0] = -100
    assert torch.isfinite(model(**batch, **gold).loss)  # was an index error (position -1)


def test_per_round_weights_cover_a_pass_of_more_or_fewer_rounds():
    model = make_model(feedback={"iterations": 2, "iter_weights": [0.2, 0.3, 1.0], "max_iterations": 3})
    assert model.iteration_weights(2) == [0.2, 0.3, 1.0]
    assert model.iteration_weights(3) == [0.2, 0.3, 0.3, 1.0] and model.iteration_weights(1) == [0.2, 1.0]
    assert torch.isfinite(model.eval()(**make_batch(), **labels()).loss)  # max_iterations rounds with labels


def test_crf_loss_marginalises_a_word_whose_tag_is_unseen():
    """A validation tag unseen in training (-100) is skipped, as the softmax loss skips it: the
    utterance scores all paths through its known tags, not the path with tag 0 at that word."""
    crf = random_crf(3).double()
    emissions = torch.randn(2, 4, 3, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]).bool()
    tags = torch.tensor([[2, -100, 1, -100], [1, 0, 2, 1]])

    def score(b, path):
        s = crf.start[path[0]] + emissions[b, 0, path[0]]
        for i in range(1, len(path)):
            s = s + crf.transitions[path[i - 1], path[i]] + emissions[b, i, path[i]]
        return s + crf.end[path[-1]]

    paths = list(itertools.product(range(3), repeat=3))
    log_z = torch.logsumexp(torch.stack([score(0, p) for p in paths]), 0)
    kept = torch.logsumexp(torch.stack([score(0, (2, t, 1)) for t in range(3)]), 0)
    nll = crf.utterance_nll(emissions, tags, mask)
    assert nll[0].item() == pytest.approx((log_z - kept).item(), rel=1e-9)
    assert nll[0].item() != pytest.approx((log_z - score(0, (2, 0, 1))).item(), rel=1e-3)
    full = crf.utterance_nll(emissions[1:], tags[1:], mask[1:])  # fully labelled: the gold path's score
    assert nll[1].item() == pytest.approx(full.item(), rel=1e-9)
    assert crf.neg_log_likelihood(emissions, tags, mask).item() == pytest.approx(nll.mean().item(), rel=1e-9)
    assert torch.allclose(crf.utterance_nll(emissions, tags, mask, marginalise=True), nll, rtol=1e-9)
    assert torch.allclose(crf.utterance_nll(emissions[1:], tags[1:], mask[1:], marginalise=True), full, rtol=1e-9)
    # MTIF takes per-example gradients with torch.func.vmap: the same gradients as one at a time
    grad = torch.func.grad(lambda e, t, m: crf.utterance_nll(e[None], t[None], m[None], marginalise=True).sum())
    batched = torch.func.vmap(grad)(emissions, tags, mask)
    for b in range(2):
        e = emissions[b:b + 1].clone().requires_grad_()
        crf.utterance_nll(e, tags[b:b + 1], mask[b:b + 1]).sum().backward()
        assert torch.allclose(batched[b], e.grad[0], rtol=1e-9, atol=1e-12)
    assert batched[0, 1].abs().sum() > 0 and batched[0, 3].abs().sum() == 0  # the marginalised word; padding


def test_predict_takes_the_feedback_steps_from_the_gathered_examples():
    """Under several processes `gather_for_metrics` drops the copies that pad the last batch; the
    mean step per round must come from the same examples as the predictions (here: the first two)."""
    from slu_feedback.evaluation.predict import predict

    class KeepFirstTwo:  # an Accelerator whose gather keeps two of the batch's three examples
        is_local_main_process = True

        def unwrap_model(self, model):
            return model

        def pad_across_processes(self, tensor, dim):
            return tensor

        def gather_for_metrics(self, pieces):
            return [p[:2] for p in pieces]

    model = make_model(feedback={"iterations": 2}).eval()
    with torch.no_grad():  # infuse into the logits with strong amplifiers: the rounds differ clearly
        for gate in (model.slot_to_intent, model.intent_to_slot):
            gate.beta.copy_(torch.tensor([0.0, 0.0, 1.0]))
            gate.amplifiers[2].weight.normal_(0, 5.0)
    batch = make_batch()
    out = predict(model, [batch], KeepFirstTwo(), keep_iterations=True)
    steps = model(**batch).steps  # (tasks, K, batch)
    assert len(out["intent"]) == len(out["intent_0"]) == len(out["slots_0"]) == 2
    assert out["mean_step"]["intent"] == pytest.approx(steps[0, :, :2].mean(-1).tolist())
    assert out["mean_step"]["slot"] == pytest.approx(steps[1, :, :2].mean(-1).tolist())
    assert out["mean_step"]["intent"] != pytest.approx(steps[0].mean(-1).tolist())

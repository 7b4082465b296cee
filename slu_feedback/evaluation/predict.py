"""Run a model over a dataset and collect predictions (works under Accelerate, one or many processes)."""

import torch
from tqdm.auto import tqdm

from .metrics import compute_metrics, intent_calibration


@torch.no_grad()
def predict(model, dataloader, accelerator=None, iterations=None, keep_iterations=False, desc="predict",
            dataset=None) -> dict:
    """Return per example: intent id and probability vector, slot ids per word, iterations used.

    With `keep_iterations`, also the intent/slot ids of iteration 0 (before feedback). `dataset`:
    which head pair of a (prepared) `JointSLUModel` answers."""
    model.eval()
    raw = accelerator.unwrap_model(model) if accelerator else model
    if dataset is not None:
        raw = raw.models[dataset]
    out = {"intent": [], "intent_probs": [], "slots": [], "iterations": [], "intent_0": [], "slots_0": []}
    step_sum, count = None, 0
    disable = accelerator is not None and not accelerator.is_local_main_process
    device = next(raw.parameters()).device
    for batch in tqdm(dataloader, desc=desc, leave=False, disable=disable):
        if accelerator is None:  # a prepared loader places batches itself
            batch = {k: v.to(device) for k, v in batch.items()}
        inputs = {k: v for k, v in batch.items() if k not in ("intent_labels", "slot_labels")}
        if dataset is not None:
            inputs["dataset"] = dataset
        result = model(**inputs, iterations=iterations, return_iterations=keep_iterations)
        probs = result.intent_logits.softmax(-1)
        slot_ids = raw.decode_slots(result.slot_logits, batch["word_mask"])
        lengths = batch["word_mask"].sum(1)
        # per-example JS step sizes, batch first so that they are gathered (and de-duplicated) with the rest
        steps = None if result.steps is None else result.steps.permute(2, 0, 1)  # (batch, tasks, K)
        pieces = [probs, slot_ids, lengths, result.iterations] + ([] if steps is None else [steps])
        if keep_iterations:
            pieces += [result.all_intent_logits[0].argmax(-1), raw.decode_slots(result.all_slot_logits[0], batch["word_mask"])]
        if accelerator is not None:
            pieces = accelerator.gather_for_metrics(
                [accelerator.pad_across_processes(p, dim=1) if p.dim() > 1 else p for p in pieces])
        probs, slot_ids, lengths, used = pieces[:4]
        if steps is not None:
            steps = pieces.pop(4)
        out["intent_probs"].extend(probs.cpu().tolist())
        out["intent"].extend(probs.argmax(-1).cpu().tolist())
        out["slots"].extend(row[:n].tolist() for row, n in zip(slot_ids.cpu(), lengths.cpu()))
        out["iterations"].extend(used.cpu().tolist())
        if steps is not None:  # summed over examples for the mean step per task and iteration
            step_sum = steps.sum(0) if step_sum is None else step_sum + steps.sum(0)
            count += steps.shape[0]
        if keep_iterations:
            out["intent_0"].extend(pieces[4].cpu().tolist())
            out["slots_0"].extend(row[:n].tolist() for row, n in zip(pieces[5].cpu(), lengths.cpu()))
    if step_sum is not None:
        out["mean_step"] = dict(zip(("intent", "slot"), (step_sum / max(1, count)).tolist()))
    return out


def to_labels(ids: list, vocabulary: list, length: int | None = None, fill: str = "O") -> list:
    """Ids -> label strings; words the model did not see (truncated) get `fill`."""
    labels = [vocabulary[i] for i in ids]
    if length is not None and len(labels) < length:
        labels += [fill] * (length - len(labels))
    return labels


def evaluate_split(model, loader, raw_split, config, accelerator=None, keep_iterations=False, iterations=None,
                   dataset=None):
    """Predict a split and score it against its gold string labels. Returns (metrics, predictions)."""
    result = predict(model, loader, accelerator, iterations=iterations, keep_iterations=keep_iterations, dataset=dataset)
    gold_intents, gold_slots = list(raw_split["intent"]), list(raw_split["slots"])
    pred_intents = [config.intent_labels[i] for i in result["intent"]]
    pred_slots = [to_labels(ids, config.slot_labels, len(gold)) for ids, gold in zip(result["slots"], gold_slots)]
    metrics = compute_metrics(gold_intents, pred_intents, gold_slots, pred_slots)
    metrics.update(intent_calibration(result["intent_probs"], gold_intents, config.intent_labels))
    result.update(pred_intents=pred_intents, pred_slots=pred_slots)
    return metrics, result

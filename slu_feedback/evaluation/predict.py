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
        # every per-example piece by name, batch first, so that all are gathered (and de-duplicated) alike
        pieces = {"probs": result.intent_logits.softmax(-1),
                  "slot_ids": raw.decode_slots(result.slot_logits, batch["word_mask"], result.intent_logits.argmax(-1)),
                  "lengths": batch["word_mask"].sum(1), "used": result.iterations}
        if result.steps is not None:  # JS step sizes, (tasks, K, batch) -> (batch, tasks, K)
            pieces["steps"] = result.steps.permute(2, 0, 1)
        if keep_iterations:
            pieces["intent_0"] = result.all_intent_logits[0].argmax(-1)
            pieces["slots_0"] = raw.decode_slots(result.all_slot_logits[0], batch["word_mask"], pieces["intent_0"])
        if accelerator is not None:
            pieces = dict(zip(pieces, accelerator.gather_for_metrics(
                [accelerator.pad_across_processes(p, dim=1) if p.dim() > 1 else p for p in pieces.values()])))
        probs, lengths = pieces["probs"].cpu(), pieces["lengths"].cpu()
        out["intent_probs"].extend(probs.tolist())
        out["intent"].extend(probs.argmax(-1).tolist())
        out["slots"].extend(row[:n].tolist() for row, n in zip(pieces["slot_ids"].cpu(), lengths))
        out["iterations"].extend(pieces["used"].cpu().tolist())
        if "steps" in pieces:  # summed over examples for the mean step per task and iteration
            steps = pieces["steps"]
            step_sum = steps.sum(0) if step_sum is None else step_sum + steps.sum(0)
            count += steps.shape[0]
        if keep_iterations:
            out["intent_0"].extend(pieces["intent_0"].cpu().tolist())
            out["slots_0"].extend(row[:n].tolist() for row, n in zip(pieces["slots_0"].cpu(), lengths))
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

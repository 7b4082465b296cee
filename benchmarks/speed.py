"""Overhead of an option, measured side by side in one process: training step time, inference
throughput (batch 32) and batch-1 latency (each batch's first utterance alone) of the base model
vs the same model with K feedback iterations (`--variant feedback`), with the VMTL Bayesian head
(`--variant vmtl`) or with the CRF slot decoder (`--variant crf`).

    python benchmarks/speed.py --data atis --iterations 3      # -> results/speed_feedback_atis_hf.json
    python benchmarks/speed.py --data atis --variant vmtl      # -> results/speed_vmtl_atis_hf.json
    python benchmarks/speed.py --data atis --variant crf       # -> results/speed_crf_atis_hf.json

The two models share the encoder weights and see the same batches; steps alternate between them
so that machine noise hits both alike. Reports medians and their ratio.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, provenance  # noqa: E402

from slu_feedback.data.features import featurize, make_loader  # noqa: E402
from slu_feedback.models import SLUModel, resolve_encoder  # noqa: E402
from slu_feedback.training.recipe import load_recipe  # noqa: E402
from slu_feedback.training.trainer import build_model_config, load_data, load_tokenizer  # noqa: E402


TARGETS = {"feedback": "training step ratio <= 1.15, inference ratio >= 0.85", "vmtl": "training step ratio <= 1.5",
           "crf": "none; the ATIS epoch target is <= 45 s"}
WHAT = {"vmtl": "VMTL head (training: MC samples of the recipe defaults)", "crf": "CRF slot decoder"}


def build(recipe, label_maps, tokenizer, encoder_type: str, iterations: int = 0, head: str = "deterministic",
          slot_decoder: str = "softmax"):
    model_cfg = {**recipe["model"], "encoder_type": encoder_type, "head": head, "slot_decoder": slot_decoder,
                 "feedback": {**recipe["model"]["feedback"], "iterations": iterations}}
    config = build_model_config(model_cfg, label_maps, tokenizer)
    torch.manual_seed(0)
    return SLUModel.from_encoder(config, resolve_encoder(model_cfg["encoder"]) if encoder_type == "hf" else None,
                                 tokenizer=tokenizer)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="atis")
    parser.add_argument("--variant", default="feedback", choices=["feedback", "vmtl", "crf"])
    parser.add_argument("--iterations", type=int, default=3, help="feedback iterations (--variant feedback)")
    parser.add_argument("--encoder-type", default="hf", choices=["hf", "bilstm"])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    recipe = load_recipe(None, [f"data.path={args.data}", f"seed={args.seed}"])
    data, label_maps = load_data(recipe)
    tokenizer = load_tokenizer(recipe["model"])
    features = featurize(data["train"], tokenizer, label_maps, recipe["data"]["max_length"])
    torch.manual_seed(args.seed)
    batches = [b for _, b in zip(range(args.steps + 3), make_loader(features, 32, tokenizer, shuffle=True))]
    other = args.variant
    variants = {"feedback": {"iterations": args.iterations}, "vmtl": {"head": "vmtl"}, "crf": {"slot_decoder": "crf"}}
    models = {"base": build(recipe, label_maps, tokenizer, args.encoder_type),
              other: build(recipe, label_maps, tokenizer, args.encoder_type, **variants[other])}
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=1e-5) for k, m in models.items()}

    train_times = {k: [] for k in models}
    for i, batch in enumerate(batches):
        for name in (("base", other) if i % 2 == 0 else (other, "base")):
            model, optimizer = models[name].train(), optimizers[name]
            start = time.perf_counter()
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if i >= 3:  # warm-up steps are not timed
                train_times[name].append(time.perf_counter() - start)

    infer_times = {k: [] for k in models}
    latency = {k: [] for k in models}  # batch 1: each batch's first utterance alone, unpadded
    with torch.no_grad():
        for i, batch in enumerate(batches):
            inputs = {k: v for k, v in batch.items() if k not in ("intent_labels", "slot_labels")}
            n_tokens, n_words = int(inputs["attention_mask"][0].sum()), int(inputs["word_mask"][0].sum())
            single = {k: v[:1, :n_tokens] if k in ("input_ids", "attention_mask") else v[:1, :n_words]
                      for k, v in inputs.items()}
            for name in (("base", other) if i % 2 == 0 else (other, "base")):
                model = models[name].eval()
                for request, times in ((inputs, infer_times), (single, latency)):
                    start = time.perf_counter()
                    out = model(**request)
                    model.decode_slots(out.slot_logits, request["word_mask"], out.intent_logits.argmax(-1))
                    if i >= 3:
                        times[name].append(time.perf_counter() - start)

    step = {k: statistics.median(v) for k, v in train_times.items()}
    infer = {k: 32 / statistics.median(v) for k, v in infer_times.items()}
    batch1_ms = {k: 1000 * statistics.median(v) for k, v in latency.items()}
    result = {
        "benchmark": f"speed_{other}", **provenance(), "seeds": [args.seed], "data": args.data,
        "encoder_type": args.encoder_type, "variant": other, "timed_steps": args.steps,
        **({"iterations": args.iterations} if other == "feedback" else {}),
        "train_step_seconds_median": step, "train_step_ratio": step[other] / step["base"],
        "inference_batch32_utt_per_s_median": infer,
        "inference_throughput_ratio": infer[other] / infer["base"],
        "inference_batch1_ms_median": batch1_ms, "inference_batch1_latency_ratio": batch1_ms[other] / batch1_ms["base"],
    }
    what = f"K = {args.iterations}" if other == "feedback" else WHAT[other]
    result["summary_markdown"] = (
        f"{args.data}, {args.encoder_type} encoder, {what}, {args.steps} alternating steps per model: "
        f"training step {step['base']:.3f} s (base) vs {step[other]:.3f} s ({other}), ratio "
        f"**{result['train_step_ratio']:.3f}**; inference at batch 32 {infer['base']:.0f} vs "
        f"{infer[other]:.0f} utterances/s, ratio **{result['inference_throughput_ratio']:.3f}**; batch-1 latency "
        f"{batch1_ms['base']:.1f} vs {batch1_ms[other]:.1f} ms, ratio **{result['inference_batch1_latency_ratio']:.3f}** "
        f"(targets: {TARGETS[other]}).")
    name = f"speed_{other}_{args.data}_{args.encoder_type}"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(result["summary_markdown"])


if __name__ == "__main__":
    main()

"""PNG plots written into run directories (matplotlib with the non-interactive Agg backend)."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_jsonl(path) -> list:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def flatten(values: dict) -> dict:
    """A joint run logs gate and prior values per dataset, {dataset: {key: value}}, where value is a
    list (gate) or a dict of floats (prior): -> {"dataset/key": value}. Others pass through."""
    nested = all(isinstance(v, dict) and all(isinstance(x, (dict, list)) for x in v.values()) for v in values.values())
    return {f"{name}/{key}": v for name, inner in values.items() for key, v in inner.items()} if nested else values


def plot_training_curves(metrics_path, out_path) -> None:
    """Training loss per logged step, validation metrics per epoch, and the feedback gate's
    probabilities over training when the model has feedback."""
    rows = read_jsonl(metrics_path)
    steps = [r for r in rows if r.get("type") == "step"]
    epochs = [r for r in rows if r.get("type") == "epoch"]
    gated = [r for r in steps if r.get("gate")]
    bayes = [r for r in steps if r.get("prior")]
    panels = 2 + bool(gated) + bool(bayes)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    axes[0].plot([r["step"] for r in steps], [r["loss"] for r in steps])
    axes[0].set(title="training loss", xlabel="optimizer step", yscale="log")
    for key in ("intent_acc", "slot_f1", "sentence_acc"):
        axes[1].plot([r["epoch"] for r in epochs], [100 * r["validation"][key] for r in epochs], marker="o", label=key)
    axes[1].set(title="validation (%)", xlabel="epoch")
    axes[1].legend()
    if gated:
        series = [flatten(r["gate"]) for r in gated]
        for direction in series[0]:
            for m in range(len(series[0][direction])):
                axes[2].plot([r["step"] for r in gated], [g[direction][m] for g in series],
                             label=f"{direction} point {m}")
        axes[2].set(title="feedback gate probabilities", xlabel="optimizer step", ylim=(0, 1))
        axes[2].legend(fontsize=7)
    if bayes:  # VMTL: weight of each prior on the other task's posterior (the rest is on N(0, I))
        ax = axes[-1]
        series = [flatten(r["prior"]) for r in bayes]
        for prior in series[0]:
            ax.plot([r["step"] for r in bayes], [p[prior]["other"] for p in series], label=f"{prior}: other task")
        ax.axhline(0.5, color="grey", lw=0.5, ls=":")
        ax.set(title="VMTL prior weight on the other task", xlabel="optimizer step", ylim=(0, 1))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


def plot_confusion(gold: list, pred: list, labels: list, out_path, max_labels: int = 30) -> None:
    """Intent confusion matrix (rows gold, columns predicted), the most frequent labels only."""
    from collections import Counter

    keep = [label for label, _ in Counter(gold).most_common(max_labels)]
    keep += sorted({p for p in pred if p not in keep and p in labels})[: max(0, max_labels - len(keep))]
    index = {label: i for i, label in enumerate(keep)}
    matrix = [[0] * len(keep) for _ in keep]
    for g, p in zip(gold, pred):
        if g in index and p in index:
            matrix[index[g]][index[p]] += 1
    size = max(5, 0.35 * len(keep) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    top = min(max(map(max, matrix), default=0), 20)  # the darkest shade (counts above 20 are clipped)
    ax.imshow([[min(v, 20) for v in row] for row in matrix], cmap="Blues")
    ax.set_xticks(range(len(keep)), keep, rotation=90, fontsize=7)
    ax.set_yticks(range(len(keep)), keep, fontsize=7)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=6, color="white" if min(v, 20) > top / 2 else "black")
    ax.set(xlabel="predicted intent", ylabel="gold intent", title="intent confusion")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


def plot_steps(steps_per_iteration: list, out_path) -> None:
    """Mean JS step size per feedback iteration for each task: the convergence behaviour."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for task, values in steps_per_iteration.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", label=task)
    ax.set(title="feedback step size per iteration", xlabel="iteration k", ylabel="mean JS(P^k, P^k-1)", yscale="log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


def plot_reliability(bins: list, ece: float, out_path, title: str = "intent reliability") -> None:
    """Reliability diagram: accuracy per confidence bin against the diagonal, bin counts below."""
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    width = bins[0]["hi"] - bins[0]["lo"]
    centres = [(b["lo"] + b["hi"]) / 2 for b in bins]
    filled = [b for b in bins if b["count"]]
    ax.bar([(b["lo"] + b["hi"]) / 2 for b in filled], [b["accuracy"] for b in filled], width=width * 0.95,
           edgecolor="black", label="accuracy")
    ax.bar([(b["lo"] + b["hi"]) / 2 for b in filled], [b["confidence"] - b["accuracy"] for b in filled],
           bottom=[b["accuracy"] for b in filled], width=width * 0.95, color="red", alpha=0.3, label="gap")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set(title=f"{title} (ECE {100 * ece:.2f}%)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    hist.bar(centres, [b["count"] for b in bins], width=width * 0.95, color="grey")
    hist.set(xlabel="top-1 confidence", ylabel="count", yscale="symlog")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)

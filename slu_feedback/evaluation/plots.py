"""PNG plots written into run directories (matplotlib with the non-interactive Agg backend)."""

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

# line styles and markers cycled over series that may coincide (VMTL priors, a joint run's datasets)
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "v", "D", "x")


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


def plot_training_curves(metrics_path, out_path):
    """Training loss per logged step, validation metrics per epoch (a joint run: the mean, solid, and
    each dataset's, thinner), and the feedback gate's and VMTL prior's probabilities over training
    when the model has them. Returns the (closed) figure, for inspection."""
    rows = read_jsonl(metrics_path)
    steps = [r for r in rows if r.get("type") == "step"]
    epochs = [r for r in rows if r.get("type") == "epoch"]
    gated = [r for r in steps if r.get("gate")]
    bayes = [r for r in steps if r.get("prior")]
    panels = 2 + bool(gated) + bool(bayes)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    axes[0].plot([r["step"] for r in steps], [r["loss"] for r in steps])
    axes[0].set(title="training loss", xlabel="optimizer step", yscale="log")
    warm = [r["step"] for r in bayes if r.get("kl_weight", 1) < 1]
    if warm:  # VMTL: the loss rises while the KL term's weight ramps up to 1; say where that ends
        axes[0].axvspan(0, max(warm), color="grey", alpha=0.15, label="KL warm-up (the loss rises as KL enters)")
        axes[0].legend(fontsize=7)
    # a joint run's epoch rows carry each dataset's metrics under validation["datasets"] (see mean_metrics)
    datasets = sorted({name for r in epochs for name in r["validation"].get("datasets", {})})
    for key in ("intent_acc", "slot_f1", "sentence_acc"):
        mean, = axes[1].plot([r["epoch"] for r in epochs], [100 * r["validation"][key] for r in epochs], marker="o",
                             label=f"{key} (mean)" if datasets else key)
        for i, name in enumerate(datasets):  # same colour as the mean, one line style per dataset
            own = [r for r in epochs if name in r["validation"].get("datasets", {})]
            axes[1].plot([r["epoch"] for r in own], [100 * r["validation"]["datasets"][name][key] for r in own],
                         color=mean.get_color(), ls=LINESTYLES[1 + i % 3], marker=MARKERS[1 + i % 5], ms=4, lw=1,
                         alpha=0.7, label=f"{name}: {key}")
    axes[1].set(title="validation (%)", xlabel="epoch")
    axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs only
    axes[1].legend(fontsize=7 if datasets else None)
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
        every = max(1, len(bayes) // 8)
        for i, prior in enumerate(series[0]):  # priors often stay at the same weight: each gets its own style
            ax.plot([r["step"] for r in bayes], [p[prior]["other"] for p in series], label=f"{prior}: other task",
                    ls=LINESTYLES[i % len(LINESTYLES)], marker=MARKERS[i % len(MARKERS)], ms=4, alpha=0.8,
                    markevery=(i % every, every))  # markers staggered so that they do not hide each other
        ax.axhline(0.5, color="grey", lw=0.5, ls=":")
        ax.set(title="VMTL prior weight on the other task", xlabel="optimizer step", ylim=(0, 1))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return fig


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


def plot_steps(steps_per_iteration: dict, out_path):
    """Mean JS step size per feedback iteration for each task: the convergence behaviour. Returns
    the (closed) figure, for inspection."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for task, values in steps_per_iteration.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", label=task)
    ax.set(title="feedback step size per iteration", xlabel="iteration k", ylabel="mean JS(P^k, P^k-1)")
    # Step sizes span decades, but a converged model's step is exactly 0, which a log axis drops: symlog
    # is logarithmic above the smallest positive step (rounded down to a power of 10) and linear below,
    # so 0 is drawn at the bottom. All zero (nothing positive): a plain linear axis.
    positive = [v for values in steps_per_iteration.values() for v in values if v > 0]
    if positive:
        ax.set_yscale("symlog", linthresh=10 ** math.floor(math.log10(min(positive))))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole iterations only
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return fig


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

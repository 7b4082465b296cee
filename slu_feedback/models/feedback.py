"""Pieces of the output-level feedback loop (METHODS.md section 1): heads with infusion points,
the Gumbel-softmax gate with its amplifiers, and the convergence loss.

The loop itself lives in `SLUModel.run_heads`, where it reads top to bottom.
"""

import torch
import torch.nn.functional as F
from torch import nn


def infused_hidden(head, x, infusions):
    """Points 0 and 1 of a head (`Head` or the VMTL `VariationalHead`): the input plus its
    infusion, through the hidden layer, plus the hidden layer's infusion."""
    if infusions[0] is not None:
        x = x + infusions[0]
    h = F.gelu(head.hidden(head.dropout(x)))
    return h if infusions[1] is None else h + infusions[1]


INFUSION_POINTS = ("head input", "hidden activation", "logits")  # where a gate may infuse, by number


class Head(nn.Module):
    """Two-layer task head. Infusion points: 0 = head input (before the hidden layer), 1 = hidden
    activation (input of the output layer), 2 = logits.

    `infusions[m]`, when given, is added at point m; this is how the other task's output enters.
    """

    def __init__(self, in_dim: int, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.hidden = nn.Linear(in_dim, hidden)
        self.out = nn.Linear(hidden, num_labels)
        self.widths = (in_dim, hidden, num_labels)

    def forward(self, x, infusions=(None, None, None)):
        h = infused_hidden(self, x, infusions)
        logits = self.out(self.dropout(h))
        if infusions[2] is not None:
            logits = logits + infusions[2]
        return logits


class FeedbackGate(nn.Module):
    """Lifts one task's label distribution into the other task's head at a learned infusion point.

    One amplifier (Linear(n_labels -> width)) per candidate point; gate logits `beta` choose among
    them with Gumbel-softmax while training (temperature annealed by the trainer) and argmax at
    evaluation, so inference is deterministic and uses one point per direction.
    """

    def __init__(self, num_source_labels: int, widths: tuple, mode: str = "gumbel"):
        super().__init__()
        self.mode = mode
        self.fixed_point = None
        if mode.startswith("fixed:"):
            self.fixed_point = int(mode.split(":", 1)[1])
            if not 0 <= self.fixed_point < len(widths):
                raise ValueError(f"gate {mode!r}: infusion point must be in 0..{len(widths) - 1}")
        elif mode not in ("gumbel", "soft"):
            raise ValueError(f"gate must be 'gumbel', 'soft' or 'fixed:<m>', not {mode!r}")
        self.widths = tuple(widths)
        self.amplifiers = nn.ModuleList(
            nn.Linear(num_source_labels, w) if self.fixed_point in (None, m) else nn.Identity()
            for m, w in enumerate(widths)
        )
        self.beta = nn.Parameter(torch.zeros(len(widths)))  # unused by a fixed gate (see trainer.new_accelerator)

    def probabilities(self) -> torch.Tensor:
        """Gate distribution over infusion points (what the run summary records)."""
        if self.fixed_point is not None:
            return F.one_hot(torch.tensor(self.fixed_point), len(self.widths)).float()
        return self.beta.detach().softmax(-1)

    def weights(self, tau: float) -> torch.Tensor:
        if self.fixed_point is not None:
            return F.one_hot(torch.tensor(self.fixed_point, device=self.beta.device), len(self.widths)).float()
        if self.mode == "soft":
            return self.beta.softmax(-1)
        if self.training:
            return F.gumbel_softmax(self.beta, tau=tau, hard=False)
        return F.one_hot(self.beta.argmax(), len(self.widths)).float()  # hard choice at evaluation

    def forward(self, signal: torch.Tensor, pi: torch.Tensor) -> list:
        """Return the additions for each infusion point (None where the gate weight is 0), given the
        gate weights `pi` from `weights`: drawn once per forward pass, so that every round of the
        loop in one training step infuses at the same points (METHODS.md: resampled each step)."""
        additions = []
        for m, amplifier in enumerate(self.amplifiers):
            if isinstance(amplifier, nn.Identity) or (not self.training and pi[m] == 0):
                additions.append(None)
            else:
                additions.append(pi[m] * amplifier(signal))
        return additions


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence between distributions along the last dimension."""
    m = 0.5 * (p + q)
    log_m = m.clamp_min(1e-12).log()
    kl_pm = (p * (p.clamp_min(1e-12).log() - log_m)).sum(-1)
    kl_qm = (q * (q.clamp_min(1e-12).log() - log_m)).sum(-1)
    return 0.5 * (kl_pm + kl_qm)


def step_sizes(intent_probs: list, slot_probs: list, word_mask: torch.Tensor) -> torch.Tensor:
    """Per-example JS step of each task between successive iterations: (tasks=2, K, batch)."""
    maskf = word_mask.float()
    words = maskf.sum(1).clamp(min=1)
    intent_steps, slot_steps = [], []
    for k in range(1, len(intent_probs)):
        intent_steps.append(js_divergence(intent_probs[k], intent_probs[k - 1]))
        slot_steps.append((js_divergence(slot_probs[k], slot_probs[k - 1]) * maskf).sum(1) / words)
    return torch.stack([torch.stack(intent_steps), torch.stack(slot_steps)])


def labelled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labelled positions (label -100 is ignored), and 0 rather than
    F.cross_entropy's NaN when a batch has none (partially annotated data: every utterance in a
    batch may lack this task's label)."""
    total = F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
    return total / (labels != -100).sum().clamp(min=1)


def convergence_loss(steps: torch.Tensor, rho: float = 1.0) -> torch.Tensor:
    """L_conv = sum_t [ sum_{k>=2} relu(delta_t^k - rho * delta_t^{k-1}) + delta_t^K ].

    `steps` is (tasks, K, batch); deltas are batch means. Zero exactly when outputs stop changing;
    penalises a step that grows and a last step that is not small.
    """
    delta = steps.mean(-1)  # (tasks, K)
    growth = F.relu(delta[:, 1:] - rho * delta[:, :-1]).sum()
    return growth + delta[:, -1].sum()

"""VMTL Bayesian head (METHODS.md section 2; Shen et al., NeurIPS 2021), `model.head: vmtl`.

Each task (intent, slot) replaces the final Linear of its head by a variational classifier:

- latent `q_t(z | h) = N(mu_t(h), diag sigma_t^2(h))`, h = the head's hidden-layer output
  (after the feedback infusion at point 1, so the feedback loop's points 0, 1 and 2 all stay);
- classifier weights amortised from label names: every label gets a text (`label_text`),
  embedded once with the encoder's input word embeddings (mean of its word pieces) into `e_c`,
  and a small per-task generator gives `q_t(w_c) = N(m_t(e_c), diag s_t^2(e_c))`;
- logits `z . w_c + b_c` (plus the feedback infusion at the logits). Sampling uses the
  reparameterisation trick for z and local reparameterisation for w (the logit of class c given z
  is Gaussian with mean z.m_c and variance sum_k z_k^2 s_ck^2).

Priors (components: the OTHER task's posterior on the same input, detached, then, in a joint
run with `vmtl.across_datasets`, the other datasets' intent and slot posteriors on the same input
(`vmtl.peer_tasks`), then N(0, I); weights `alpha_t = GumbelSoftmax(beta_t, tau)` during
training, softmax(beta_t) at evaluation):

- latent: for an utterance-level (intent) task, word-level posteriors are mean-pooled over real
  words (mean of the means and mean of the variances: a summary, not the law of the average); for
  the slot task, utterance-level posteriors are broadcast to every word;
- weights: the other tasks' generators applied to this task's `e_c` (detached);
- the same-dataset component is the other task at the same feedback iteration; the peers are the
  other datasets' heads at iteration 0, run without dropout;
- a dataset's model loaded on its own has no peers: if `forward` is given labels, its loss uses
  the components it has, alpha renormalised over them;
- `prior: single` (default, as in the authors' code): N(sum_j a_j mu_j, diag sum_j a_j^2 var_j),
  closed-form KL; `prior: mixture`: the true mixture density, KL by Monte Carlo over the
  posterior samples (the entropy of q is analytic, only E_q[log p] is sampled).

Choices of this project, beyond the paper:

- B-/I- tags of one slot type share a label text, hence a generator input; a deterministic,
  learned offset per tag role (O, B, I) is added to the generator mean so that B-x and I-x can
  differ. The prior and the KL act on the role-free part. Each class also has a deterministic bias.
- The feedback loop (and prediction in `predict: mean`) uses the posterior-mean logits
  `mu_z . m_w + b`; the training loss is the Monte Carlo cross-entropy over `samples` draws.
- Log-variances start near LOGVAR_OFFSET (small noise at initialisation) and are clamped.
- `predict: mc` (default) returns log of the probabilities averaged over `predict_samples` draws
  as "logits" (so softmax gives the predictive distribution); its samples use a fixed-seed
  generator, so evaluation is repeatable. It is the default because the posterior mean is
  over-confident: on ATIS 5 % / 10 % validation (seed 1), intent ECE 7.1 / 4.2 with the mean and
  2.4 / 2.1 with 32 draws (the deterministic head: 6.0 / 2.8), sentence accuracy 64.8 / 77.2 and
  64.4 / 77.2. With 4 draws the argmax was noisy (sentence accuracy 2 points lower), hence a
  prediction count separate from the training `samples`.

KL normalisation: KL_z is summed over latent dimensions and averaged over utterances (intent) or
real words (slot); KL_w is summed over dimensions and averaged over classes. The defaults
beta_z = 0.01, beta_w = 0.001 come only from tiny-encoder runs on data/sample (with 0.1 / 0.01 the
KL terms dominated and the intent did not learn in 8 epochs; with 0.01 / 0.001 the VMTL model
matched the deterministic one's intent accuracy and slot F1 after 20 epochs); choose them on
validation for real data. The layers that produce mu_z and the class weights use fan-in
initialisation (`init_bilinear`): with the 0.02-std default the bilinear logits start at a saddle.
"""

import hashlib
import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .feedback import infused_hidden, labelled_cross_entropy

LOGVAR_OFFSET = -4.0
LOGVAR_RANGE = (-12.0, 4.0)
ROLES = {"none": 0, "O": 1, "B": 2, "I": 3}

# A few expansions so that label texts are made of ordinary words the encoder knows.
ABBREVIATIONS = {
    "fromloc": "from location", "toloc": "to location", "stoploc": "stop location", "loc": "location",
    "depart": "departure", "arrive": "arrival", "no": "number", "num": "number", "mod": "modifier",
    "poi": "point of interest", "qty": "quantity", "desc": "description", "min": "minimum", "max": "maximum",
}


def label_role(label: str) -> int:
    """0 for intents (no tag prefix), 1 for O, 2 for B-x, 3 for I-x."""
    if label == "O":
        return ROLES["O"]
    if label[:2] in ("B-", "I-") and len(label) > 2:
        return ROLES[label[0]]
    return ROLES["none"]


def _words(name: str) -> list:
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)  # PlayMusic -> Play Music, timeRange -> time Range
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", name)
    out = []
    for word in re.split(r"[\s._\-/:]+", name.lower()):
        if word:
            out.extend(ABBREVIATIONS.get(word, word).split())
    return out


def label_text(label: str, overrides: dict | None = None) -> str:
    """The natural-language text of a label, e.g. "B-fromloc.city_name" -> "from location city
    name", "atis_flight" -> "flight", "PlayMusic" -> "play music", "O" -> "outside";
    `#`-joined multi-intents are joined with "and". `overrides` (recipe `model.label_names`)
    maps a full label, or a slot type without its B-/I- prefix, to its text."""
    overrides = overrides or {}
    if label in overrides:
        return str(overrides[label])
    if label == "O":
        return "outside"
    name = label[2:] if label_role(label) in (ROLES["B"], ROLES["I"]) else label
    if name in overrides:
        return str(overrides[name])
    parts = []
    for part in name.split("#"):
        part = re.sub(r"^atis_", "", part)
        words = _words(part)
        if words:
            parts.append(" ".join(words))
    return " and ".join(parts) or label.lower() or "label"


def embed_texts(texts: list, tokenizer, embedding_weight: torch.Tensor) -> torch.Tensor:
    """Mean of the input word-piece embeddings of each text (the unknown token for an empty one)."""
    rows = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = [i for i in ids if 0 <= i < embedding_weight.shape[0]] or [tokenizer.unk_token_id or 0]
        rows.append(embedding_weight[torch.tensor(ids, device=embedding_weight.device)].mean(0))
    return torch.stack(rows).detach().float()


def text_seeded_embeddings(texts: list, dim: int) -> torch.Tensor:
    """Deterministic stand-in embeddings (one Gaussian vector per distinct text), used when a model
    is built without a tokenizer; training from an encoder replaces them with word embeddings."""
    rows = []
    for text in texts:
        seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
        rows.append(torch.randn(dim, generator=torch.Generator().manual_seed(seed)))
    return torch.stack(rows)


# -- Gaussian algebra -------------------------------------------------------------------------
def gaussian_kl(mu_q, logvar_q, mu_p, var_p) -> torch.Tensor:
    """KL(N(mu_q, exp(logvar_q)) || N(mu_p, var_p)), diagonal, summed over the last dimension."""
    var_p = var_p.clamp_min(1e-8)
    return 0.5 * (var_p.log() - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / var_p - 1).sum(-1)


def combine(alpha, mus: list, variances: list):
    """The single-Gaussian prior N(sum_j a_j mu_j, diag sum_j a_j^2 var_j)."""
    mu = sum(a * m for a, m in zip(alpha, mus))
    var = sum(a * a * v for a, v in zip(alpha, variances))
    return mu, var


def gaussian_log_prob(x, mu, var) -> torch.Tensor:
    var = var.clamp_min(1e-8)
    return -0.5 * ((x - mu).pow(2) / var + var.log() + math.log(2 * math.pi)).sum(-1)


def mixture_kl_mc(samples, mu_q, logvar_q, alpha, mus: list, variances: list) -> torch.Tensor:
    """KL(q || sum_j a_j N(mu_j, var_j)) = -H[q] - E_q[log p(z)], E_q by the samples (S, ..., d)."""
    neg_entropy = -0.5 * (1 + math.log(2 * math.pi) + logvar_q).sum(-1)
    log_alpha = alpha.clamp_min(1e-12).log()
    log_p = torch.logsumexp(torch.stack([la + gaussian_log_prob(samples, m, v)
                                         for la, m, v in zip(log_alpha, mus, variances)]), 0)
    return neg_entropy - log_p.mean(0)


def prior_kl(mu_q, logvar_q, alpha, mus, variances, form: str, samples=None) -> torch.Tensor:
    if form == "mixture":
        return mixture_kl_mc(samples, mu_q, logvar_q, alpha, mus, variances)
    mu_p, var_p = combine(alpha, mus, variances)
    return gaussian_kl(mu_q, logvar_q, mu_p, var_p)


def _logvar(raw):
    return (raw + LOGVAR_OFFSET).clamp(*LOGVAR_RANGE)


# -- modules ----------------------------------------------------------------------------------
class WeightGenerator(nn.Module):
    """e_c -> (m(e_c), log s^2(e_c)): the amortised posterior of a task's classifier weights."""

    def __init__(self, embedding_dim: int, hidden: int, latent_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(embedding_dim)
        self.hidden = nn.Linear(embedding_dim, hidden)
        self.out = nn.Linear(hidden, 2 * latent_dim)

    def forward(self, embeddings):
        mean, raw = self.out(F.gelu(self.hidden(self.norm(embeddings)))).chunk(2, -1)
        return mean, _logvar(raw)


@dataclass
class Posterior:
    """One head call: the latent posterior and the classifier-weight posterior it was used with."""

    mu: torch.Tensor  # (batch, d) or (batch, words, d)
    logvar: torch.Tensor
    weight_mean: torch.Tensor  # (classes, d), role offsets included
    weight_logvar: torch.Tensor
    bias: torch.Tensor
    logit_infusion: torch.Tensor | None  # the feedback addition at the logits, if any

    def sample_z(self, samples: int, generator=None, shared: bool = False) -> torch.Tensor:
        eps = noise((samples, *self.mu.shape), self.mu, generator, shared)
        return self.mu + (0.5 * self.logvar).exp() * eps

    def sample_logits(self, z: torch.Tensor, generator=None, shared: bool = False) -> torch.Tensor:
        """Logits for latent samples z (S, ..., d), w by local reparameterisation."""
        mean = z @ self.weight_mean.T
        var = z.pow(2) @ self.weight_logvar.exp().T
        logits = mean + (var + 1e-8).sqrt() * noise(mean.shape, mean, generator, shared) + self.bias
        return logits if self.logit_infusion is None else logits + self.logit_infusion

    def mc_log_probs(self, samples: int, seed: int = 0) -> torch.Tensor:
        """log of the predictive distribution averaged over `samples` draws: repeatable, and the same
        draws for every utterance and word, so a prediction does not depend on the batch it is in."""
        generator = torch.Generator(device=self.mu.device).manual_seed(seed)
        logits = self.sample_logits(self.sample_z(samples, generator, shared=True), generator, shared=True)
        return torch.logsumexp(logits.log_softmax(-1), 0) - math.log(samples)


def noise(shape, like: torch.Tensor, generator=None, shared: bool = False) -> torch.Tensor:
    """Standard normal draws of `shape` (samples, batch, ..., d); `shared`: one draw per sample and
    dimension, broadcast over the batch and word axes (training draws per example)."""
    if shared:
        shape = (shape[0], *[1] * (len(shape) - 2), shape[-1])
    return torch.randn(shape, device=like.device, dtype=like.dtype, generator=generator)


class VariationalHead(nn.Module):
    """`feedback.Head` with its final Linear replaced by the variational classifier. Same infusion
    points (0 = head input, 1 = hidden layer, 2 = logits) and the same `widths`."""

    def __init__(self, in_dim: int, hidden: int, labels: list, dropout: float, latent_dim: int,
                 embedding_dim: int, label_texts: list):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.hidden = nn.Linear(in_dim, hidden)
        self.latent = nn.Linear(hidden, 2 * latent_dim)
        self.generator = WeightGenerator(embedding_dim, hidden, latent_dim)
        self.bias = nn.Parameter(torch.zeros(len(labels)))
        # e_c: computed once (from the encoder's word embeddings when training starts), saved with
        # the model as a frozen parameter (transformers leaves non-persistent buffers uninitialised)
        self.label_embeddings = nn.Parameter(torch.zeros(len(labels), embedding_dim), requires_grad=False)
        self.roles = [label_role(label) for label in labels]
        self.role_offset = nn.Parameter(torch.zeros(len(ROLES), latent_dim)) if any(self.roles) else None
        self.label_texts = list(label_texts)
        self.widths = (in_dim, hidden, len(labels))

    def weight_posterior(self):
        mean, logvar = self.generator(self.label_embeddings.detach())  # e_c is fixed (even if reloaded trainable)
        if self.role_offset is not None:
            mean = mean + self.role_offset[torch.tensor(self.roles, device=mean.device)]
        return mean, logvar

    def forward(self, x, infusions=(None, None, None)):
        h = infused_hidden(self, x, infusions)
        mu, raw = self.latent(self.dropout(h)).chunk(2, -1)
        weight_mean, weight_logvar = self.weight_posterior()
        logits = mu @ weight_mean.T + self.bias  # posterior means
        if infusions[2] is not None:
            logits = logits + infusions[2]
        return logits, Posterior(mu, _logvar(raw), weight_mean, weight_logvar, self.bias, infusions[2])


def init_bilinear(head: VariationalHead) -> None:
    """Fan-in initialisation (std 1/sqrt(fan_in)) of the layers that produce mu_z and the class
    weights: logits are a product z . w, and with both factors at the usual std-0.02 scale the
    product starts at a saddle where neither factor gets gradient. Called on the head, not on its
    WeightGenerator: transformers skips `_init_weights` for a module of custom code that holds no
    parameters of its own (the generator's are all in its children), which left it at 0.02."""
    for layer in (head.latent, head.generator.hidden, head.generator.out):
        nn.init.normal_(layer.weight, std=layer.weight.shape[1] ** -0.5)
        nn.init.zeros_(layer.bias)


class PriorMixture(nn.Module):
    """Learnable Gumbel-softmax weights of each task's priors over (the other task, the peer
    tasks of other datasets, N(0, I))."""

    def __init__(self, tasks=("intent", "slot"), peers=()):
        super().__init__()
        self.tasks = tuple(tasks)
        self.components = ("other", *peers, "standard_normal")
        self.latent_beta = nn.Parameter(torch.zeros(len(self.tasks), len(self.components)))
        self.weight_beta = nn.Parameter(torch.zeros(len(self.tasks), len(self.components)))

    def weights(self, tau: float) -> dict:
        """{("latent"|"weight", task): alpha}: Gumbel-softmax samples while training, softmax at eval."""
        out = {}
        for kind, beta in (("latent", self.latent_beta), ("weight", self.weight_beta)):
            for i, task in enumerate(self.tasks):
                out[kind, task] = F.gumbel_softmax(beta[i], tau=tau) if self.training else beta[i].softmax(-1)
        return out

    def probabilities(self) -> dict:
        """softmax(beta) per task and prior, for logs and the run summary."""
        out = {}
        for kind, beta in (("latent", self.latent_beta), ("weight", self.weight_beta)):
            for i, task in enumerate(self.tasks):
                out[f"{task}.{kind}"] = dict(zip(self.components, beta[i].detach().softmax(-1).tolist()))
        return out


def masked_mean(x, mask):
    """Mean over words (dim 1) of x (batch, words, ...) where mask (batch, words) is true."""
    m = mask.to(x.dtype)
    while m.dim() < x.dim():
        m = m.unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1)


def utterance_level(posterior: Posterior, word_mask):
    """(mean, variance) of a posterior at utterance level, detached: word-level ones mean-pooled."""
    mu, var = posterior.mu.detach(), posterior.logvar.detach().exp()
    if mu.dim() == 3:
        return masked_mean(mu, word_mask), masked_mean(var, word_mask)
    return mu, var


def word_level(posterior: Posterior, like):
    """(mean, variance) of a posterior at word level, detached: utterance-level ones broadcast."""
    mu, var = posterior.mu.detach(), posterior.logvar.detach().exp()
    if mu.dim() == 2:
        return mu.unsqueeze(1).expand_as(like), var.unsqueeze(1).expand_as(like)
    return mu, var


def available(alpha, others: list):
    """alpha over (others..., N(0, I)) without the components whose posterior is missing (None),
    renormalised; and the others that are present."""
    if len(others) + 1 != len(alpha):
        raise ValueError(f"{len(alpha)} prior weights for {len(others)} posteriors and N(0, I)")
    keep = [i for i, other in enumerate(others) if other is not None] + [len(others)]
    if len(keep) == len(alpha):
        return alpha, list(others)
    return alpha[keep] / alpha[keep].sum(), [others[i] for i in keep[:-1]]


def task_kl(posterior: Posterior, others: list, alpha, word_mask, z, form: str) -> torch.Tensor:
    """KL_z of one task to its prior: the `others` posteriors (detached, brought to this task's
    level) and N(0, I), mixed by alpha. Mean over utterances, or over all real words of the batch
    (every word counts once, as in the slot cross-entropy, whatever its utterance's length)."""
    alpha, others = available(alpha, others)
    if posterior.mu.dim() == 2:
        components = [utterance_level(other, word_mask) for other in others]
    else:
        components = [word_level(other, posterior.mu) for other in others]
    mus = [m for m, _ in components] + [torch.zeros_like(posterior.mu)]
    variances = [v for _, v in components] + [torch.ones_like(posterior.mu)]
    kl = prior_kl(posterior.mu, posterior.logvar, alpha, mus, variances, form, z)
    if posterior.mu.dim() == 2:
        return kl.mean()
    mask = word_mask.to(kl.dtype)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


def iteration_loss(intent: Posterior, slot: Posterior, intent_labels, slot_labels, word_mask, alpha: dict,
                   samples: int, form: str, peers: list = ()):
    """Monte Carlo cross-entropy and KL_z of both tasks at one feedback iteration. `peers`: the
    other datasets' posteriors on this input (None where a peer is not attached)."""
    z_intent, z_slot = intent.sample_z(samples), slot.sample_z(samples)
    intent_logits, slot_logits = intent.sample_logits(z_intent), slot.sample_logits(z_slot)
    intent_ce = labelled_cross_entropy(intent_logits.flatten(0, -2), intent_labels.repeat(samples))
    slot_ce = labelled_cross_entropy(slot_logits.flatten(0, -2), slot_labels.repeat(samples, 1).flatten())
    kl_intent = task_kl(intent, [slot, *peers], alpha["latent", "intent"], word_mask, z_intent, form)
    kl_slot = task_kl(slot, [intent, *peers], alpha["latent", "slot"], word_mask, z_slot, form)
    return intent_ce, slot_ce, kl_intent, kl_slot


def weight_kl(head: VariationalHead, others: list, alpha, samples: int, form: str) -> torch.Tensor:
    """KL of a task's classifier-weight posterior (role-free part) to its prior: the other tasks'
    generators on the same label embeddings (detached; None where missing), and N(0, I). Mean over
    classes: B-x and I-x share one label embedding, so a slot type with both tags counts twice."""
    alpha, others = available(alpha, others)
    embeddings = head.label_embeddings.detach()
    mean, logvar = head.generator(embeddings)
    with torch.no_grad():
        generated = [other.generator(embeddings) for other in others]
    mus = [m for m, _ in generated] + [torch.zeros_like(mean)]
    variances = [lv.exp() for _, lv in generated] + [torch.ones_like(mean)]
    w = None
    if form == "mixture":
        w = mean + (0.5 * logvar).exp() * torch.randn((samples, *mean.shape), device=mean.device, dtype=mean.dtype)
    return prior_kl(mean, logvar, alpha, mus, variances, form, w).mean()


def predictive_entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * probs.clamp_min(1e-12).log()).sum(-1)

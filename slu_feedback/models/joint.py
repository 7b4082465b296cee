"""Multi-dataset training: one shared encoder, one `SLUModel` head pair per dataset.

A batch comes from one dataset and goes through that dataset's heads (and feedback loop); the
encoder sees every batch. Each dataset's model is an ordinary `SLUModel` whose `encoder` is the
shared module, so it is saved, evaluated and parsed like a single-dataset run (the run directory
holds one such folder per dataset, plus `joint.json`).

With `head: vmtl` and `vmtl.across_datasets` (the default), each task's priors mix the other task
of its dataset and the intent and slot tasks of every other dataset, all on the same input
(METHODS.md section 2: four tasks for ATIS+SNIPS). Each model gets the others as `vmtl_peers`;
its config names them (`vmtl.peer_tasks`), so a dataset's folder reloads on its own.

`train.other_datasets_weight` (default 0) also teaches every dataset's intent head that the other
datasets' utterances are not its own, so that a joint parser can route by confidence.

The per-dataset models are kept in a plain dict; only the shared encoder and each model's other
children are registered here, so every parameter appears once in `state_dict()` (checkpoints and
`accelerator.save_state` never see the encoder twice).
"""

import json
import math
from pathlib import Path

import torch
from torch import nn

JOINT_FILE = "joint.json"  # in a joint run directory: {"datasets": [names]}


def uniform_kl(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(uniform || softmax(logits)): 0 when a head has no preference."""
    return (-logits.log_softmax(-1).mean(-1) - math.log(logits.shape[-1])).mean()


class JointSLUModel(nn.Module):
    def __init__(self, models: dict, other_datasets_weight: float = 0.0, tokenizer=None):
        """`other_datasets_weight` > 0: in training, the other datasets' intent heads also see each
        batch and are taught to have no preference on it (loss KL(uniform || p), outlier exposure).
        Each head otherwise sees only its own dataset and can be confidently wrong on another's
        utterances, which misleads the parser's choice of the most confident head.
        `tokenizer` (VMTL heads, new models): the label names are embedded again with the shared
        encoder's word embeddings, which replace each model's own (for a BiLSTM, a random table)."""
        super().__init__()
        self.other_datasets_weight = other_datasets_weight
        if len(models) < 2:
            raise ValueError("a joint model needs at least two datasets")
        first = next(iter(models.values()))
        self.encoder = first.encoder
        self.models = dict(models)  # not registered: see the module docstring
        self.heads = nn.ModuleDict()
        for name, model in models.items():
            model.encoder = self.encoder
            self.heads[name] = nn.ModuleDict({k: v for k, v in model.named_children() if k != "encoder"})
            model.vmtl_peers = {other: m for other, m in models.items() if other != name}
            if tokenizer is not None and model.config.head == "vmtl":
                model.embed_label_names(tokenizer)

    def forward(self, dataset: str, **batch):
        model = self.models[dataset]
        if not (self.training and self.other_datasets_weight > 0):
            return model(**batch)
        features = model.encode(batch["input_ids"], batch["attention_mask"], batch["word_index"])
        out = model(**batch, features=features)
        inputs = {k: v for k, v in batch.items() if not k.endswith("_labels")}
        others = sum(uniform_kl(other(**inputs, features=features).intent_logits)
                     for name, other in self.models.items() if name != dataset)
        if out.loss is not None:
            out.loss = out.loss + self.other_datasets_weight * others
            out.loss_parts["other_datasets"] = others.item()
        return out

    def train(self, mode: bool = True):
        super().train(mode)
        for model in self.models.values():  # their `training` flag picks K and adaptive inference
            model.train(mode)
        return self

    @property
    def config(self):
        """The first dataset's config: the model settings (encoder, feedback, head) are shared."""
        return self.config_model.config

    # the trainer anneals these on "the model"; every dataset's heads follow
    def _set_all(self, attribute: str, value) -> None:
        for model in self.models.values():
            setattr(model, attribute, value)

    gate_tau = property(lambda self: self.config_model.gate_tau, lambda self, v: self._set_all("gate_tau", v))
    vmtl_tau = property(lambda self: self.config_model.vmtl_tau, lambda self, v: self._set_all("vmtl_tau", v))
    kl_weight = property(lambda self: self.config_model.kl_weight, lambda self, v: self._set_all("kl_weight", v))

    @property
    def config_model(self):
        return next(iter(self.models.values()))

    def gate_probabilities(self) -> dict:
        found = {name: model.gate_probabilities() for name, model in self.models.items()}
        return {name: p for name, p in found.items() if p}

    def prior_probabilities(self) -> dict:
        return {name: model.prior_probabilities() for name, model in self.models.items()}


def sub_state_dict(state_dict: dict, name: str) -> dict:
    """The state dict of dataset `name`'s `SLUModel` from the joint model's (gathered) state dict."""
    prefix = f"heads.{name}."
    out = {k: v for k, v in state_dict.items() if k.startswith("encoder.")}
    out.update({k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)})
    return out


def joint_datasets(run_dir) -> list:
    """The dataset names of a joint run directory ([] for a single-dataset run)."""
    path = Path(run_dir) / JOINT_FILE
    return json.loads(path.read_text(encoding="utf-8"))["datasets"] if path.exists() else []

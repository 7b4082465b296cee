"""Multi-dataset training: one shared encoder, one `SLUModel` head pair per dataset.

A batch comes from one dataset and goes through that dataset's heads (and feedback loop); the
encoder sees every batch. Each dataset's model is an ordinary `SLUModel` whose `encoder` is the
shared module, so it is saved, evaluated and parsed like a single-dataset run (the run directory
holds one such folder per dataset, plus `joint.json`).

With `head: vmtl` and `vmtl.across_datasets` (the default), each task's priors mix the other task
of its dataset and the intent and slot tasks of every other dataset, all on the same input
(METHODS.md section 2: four tasks for ATIS+SNIPS). Each model gets the others as `vmtl_peers`;
its config names them (`vmtl.peer_tasks`), so a dataset's folder reloads on its own.

The per-dataset models are kept in a plain dict; only the shared encoder and each model's other
children are registered here, so every parameter appears once in `state_dict()` (checkpoints and
`accelerator.save_state` never see the encoder twice).
"""

import json
from pathlib import Path

from torch import nn

JOINT_FILE = "joint.json"  # in a joint run directory: {"datasets": [names]}


class JointSLUModel(nn.Module):
    def __init__(self, models: dict):
        super().__init__()
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

    def forward(self, dataset: str, **batch):
        return self.models[dataset](**batch)

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

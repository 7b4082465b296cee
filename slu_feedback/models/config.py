"""`SLUConfig`: everything needed to rebuild an `SLUModel`, stored in every run directory."""

from transformers import PreTrainedConfig

DEFAULT_FEEDBACK = {
    "iterations": 0,  # K: feedback iterations after iteration 0 (0 = the plain joint model)
    "gate": "gumbel",  # gumbel | soft | fixed:<m>  (where the fed-back output is infused)
    "tau": 1.0,  # Gumbel-softmax temperature at the start of training ...
    "tau_min": 0.1,  # ... annealed towards this value by the end of training
    "conv_weight": 0.1,  # lambda_conv: weight of the convergence loss
    "iter_weights": 0.5,  # loss weight of iterations before the last (a number, or a list of K+1)
    "detach": False,  # stop gradients through the fed-back outputs
    "eps": 1e-3,  # inference: stop iterating once every per-step JS divergence is below eps
    "max_iterations": None,  # inference cap K_max (None = iterations)
    "slot_summary": "mean",  # mean | mean+max: how per-word slot outputs are pooled for the intent head
}

DEFAULT_VMTL = {  # the Bayesian head (model.head: vmtl, METHODS.md section 2; see models/vmtl.py)
    "latent_dim": 128,  # d_z
    "samples": 4,  # Monte Carlo samples S of the training loss
    "beta_z": 0.01,  # weight of KL_z (summed over d_z, mean over utterances / real words)
    "beta_w": 0.001,  # weight of KL_w (summed over d_z, mean over classes)
    "kl_warmup": 0.3,  # fraction of training over which the KL weights rise linearly from 0
    "tau": 1.0,  # Gumbel-softmax temperature of the prior mixture weights at the start ...
    "tau_min": 0.5,  # ... annealed towards this value by the end of training
    "prior": "single",  # single (one Gaussian, closed-form KL) | mixture (mixture density, Monte Carlo KL)
    "predict": "mc",  # mc (predictive averaged over predict_samples draws, calibrated) | mean (posterior means)
    "predict_samples": 32,  # draws of the MC prediction (the heads only: the encoder runs once)
    "across_datasets": True,  # joint runs: priors also mix the other datasets' intent and slot posteriors
    "peer_tasks": [],  # set by slu-train, not in recipes: this dataset's peer tasks, e.g. ["snips.intent", "snips.slot"]
}
HEADS = ("deterministic", "vmtl")


class SLUConfig(PreTrainedConfig):
    model_type = "slu_feedback"
    # transformers' Trainer gathers every output of prediction: the loss's parts (floats) and the
    # step sizes (batch last) are not per-example arrays
    keys_to_ignore_at_inference = ["loss_parts", "steps", "all_intent_logits", "all_slot_logits"]

    def __init__(
        self,
        encoder: str = "minilm-l6",
        encoder_type: str = "hf",  # hf (any Hugging Face encoder) | bilstm (trained from scratch)
        encoder_config: dict | None = None,  # the HF encoder's config, so weights reload offline
        vocab_size: int = 30522,  # bilstm: tokenizer vocabulary
        embedding_dim: int = 300,  # bilstm
        lstm_hidden: int = 256,  # bilstm, per direction
        lstm_layers: int = 2,  # bilstm
        pooling: str = "mean",  # mean | cls: the utterance feature fed to the intent head
        head_hidden: int = 256,
        dropout: float = 0.1,
        slot_decoder: str = "softmax",  # softmax | crf
        bio_constraints: bool = True,  # decode only valid IOB2 tag sequences
        intent_slot_constraints: bool = False,  # decode only slot types seen with the predicted intent in training
        slot_types_by_intent: dict | None = None,  # intent -> slot types seen with it in training (set by slu-train)
        intent_labels: list | None = None,
        slot_labels: list | None = None,
        intent_loss_weight: float = 1.0,
        slot_loss_weight: float = 1.0,
        feedback: dict | None = None,
        head: str = "deterministic",  # deterministic | vmtl (Bayesian head, METHODS.md section 2)
        vmtl: dict | None = None,
        label_names: dict | None = None,  # label -> text for the VMTL label-name embeddings
        word_split: str = "rule",  # how raw text becomes words at parse time: rule (tokenize) | whitespace (set by slu-train)
        # sub-tokens per utterance in training (data.max_length, set by slu-train); the parser cuts there
        # too (not `max_length`: transformers reserves that name for generation settings)
        train_max_length: int | None = None,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        self.encoder = encoder
        self.encoder_type = encoder_type
        self.encoder_config = encoder_config
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.lstm_hidden = lstm_hidden
        self.lstm_layers = lstm_layers
        self.pooling = pooling
        self.head_hidden = head_hidden
        self.dropout = dropout
        self.slot_decoder = slot_decoder
        self.bio_constraints = bio_constraints
        self.intent_slot_constraints = intent_slot_constraints
        self.slot_types_by_intent = {k: list(v) for k, v in (slot_types_by_intent or {}).items()}
        self.intent_labels = list(intent_labels or [])
        self.slot_labels = list(slot_labels or ["O"])
        self.intent_loss_weight = intent_loss_weight
        self.slot_loss_weight = slot_loss_weight
        self.feedback = {**DEFAULT_FEEDBACK, **(feedback or {})}
        self.head = head
        self.vmtl = {**DEFAULT_VMTL, **(vmtl or {})}
        self.label_names = dict(label_names or {})
        self.word_split = word_split
        self.train_max_length = train_max_length
        self.initializer_range = initializer_range
        if word_split not in ("rule", "whitespace"):
            raise ValueError(f"word_split must be 'rule' or 'whitespace', not {word_split!r}")
        if encoder_type not in ("hf", "bilstm"):
            raise ValueError(f"encoder_type must be 'hf' or 'bilstm', not {encoder_type!r}")
        if slot_decoder not in ("softmax", "crf"):
            raise ValueError(f"slot_decoder must be 'softmax' or 'crf', not {slot_decoder!r}")
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', not {pooling!r}")
        if self.feedback["max_iterations"] and not self.feedback["iterations"]:
            raise ValueError("feedback.max_iterations needs feedback.iterations > 0: a model trained without "
                             "feedback has no gates to iterate with")
        if head not in HEADS:
            raise ValueError(f"head must be 'deterministic' or 'vmtl', not {head!r}")
        if head == "vmtl":
            if slot_decoder == "crf":
                raise ValueError("model.head=vmtl does not support slot_decoder=crf (the Monte Carlo loss needs "
                                 "per-word softmax outputs); use slot_decoder=softmax")
            if self.vmtl["prior"] not in ("single", "mixture"):
                raise ValueError(f"vmtl.prior must be 'single' or 'mixture', not {self.vmtl['prior']!r}")
            if self.vmtl["predict"] not in ("mean", "mc"):
                raise ValueError(f"vmtl.predict must be 'mean' or 'mc', not {self.vmtl['predict']!r}")
            if min(int(self.vmtl[k]) for k in ("samples", "predict_samples", "latent_dim")) < 1:
                raise ValueError("vmtl.samples, vmtl.predict_samples and vmtl.latent_dim must be at least 1")
        super().__init__(**kwargs)

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


class SLUConfig(PreTrainedConfig):
    model_type = "slu_feedback"

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
        intent_labels: list | None = None,
        slot_labels: list | None = None,
        intent_loss_weight: float = 1.0,
        slot_loss_weight: float = 1.0,
        feedback: dict | None = None,
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
        self.intent_labels = list(intent_labels or [])
        self.slot_labels = list(slot_labels or ["O"])
        self.intent_loss_weight = intent_loss_weight
        self.slot_loss_weight = slot_loss_weight
        self.feedback = {**DEFAULT_FEEDBACK, **(feedback or {})}
        self.initializer_range = initializer_range
        if encoder_type not in ("hf", "bilstm"):
            raise ValueError(f"encoder_type must be 'hf' or 'bilstm', not {encoder_type!r}")
        if slot_decoder not in ("softmax", "crf"):
            raise ValueError(f"slot_decoder must be 'softmax' or 'crf', not {slot_decoder!r}")
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', not {pooling!r}")
        super().__init__(**kwargs)

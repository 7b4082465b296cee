"""A `transformers.pipeline` task, `"slu"`, returning exactly what `SLUParser` returns.

    import slu_feedback.inference.pipeline  # registers the task (importing slu_feedback.models
                                            # registers the model type with AutoConfig/AutoModel)
    from transformers import pipeline

    slu = pipeline("slu", model="runs/atis-...", device="cpu")
    slu("show me flights from boston to denver")            # one dict
    slu(["play jazz", "wake me up at 7"], batch_size=32)   # a list of dicts, batched
    slu("play jazz", explain=True)                         # with the per-iteration predictions

Equivalent, without the registry: `SLUPipeline(model=model, tokenizer=tokenizer)` with the
(model, tokenizer) pair from `slu_feedback.models.load_run`.

A joint run (one folder per dataset, no model at its top): `pipeline("slu", model="RUN/atis")`
answers with one dataset's heads; `SLUPipeline.from_pretrained("RUN")` loads the run as
`SLUParser.from_pretrained` does (every dataset's heads, the most confident answers; `dataset=`
picks one). `pipeline("slu", model="RUN")` cannot say this itself: transformers reads
`RUN/config.json` (`AutoConfig`) before any code of this package runs, and fails with its own
"Unrecognized model in RUN" error.
"""

from transformers import AutoModel
from transformers.pipelines import PIPELINE_REGISTRY, Pipeline

from ..models import SLUModel  # noqa: F401  (registers the slu_feedback model type with the Auto classes)
from .parser import SLUParser

TASK = "slu"


class SLUPipeline(Pipeline):
    """Joint intent detection and slot filling. Input: a string or a list of strings. Output: per
    string, the `SLUParser` dict (`intent`, `intent_score`, `top_intents`, `slots` with character
    offsets, `words`, `tags`, `iterations`, `truncated`, and `explain` when asked)."""

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def __init__(self, *args, top_k: int = 3, max_length: int | None = None, parser: SLUParser | None = None,
                 **kwargs):
        """`parser`: a loaded `SLUParser` to answer with (from_pretrained passes a joint run's)."""
        super().__init__(*args, **kwargs)
        self.parser = parser or SLUParser(self.model, self.tokenizer, max_length=max_length, top_k=top_k)

    @classmethod
    def from_pretrained(cls, run_dir, dataset: str | None = None, device: str = "cpu", **kwargs) -> "SLUPipeline":
        """Any run, a joint run's top folder too, loaded as `SLUParser.from_pretrained(run_dir,
        device=device, dataset=dataset, **kwargs)` loads it (`top_k`, `max_length`, `quantize`):
        `transformers.pipeline` can only load one model folder."""
        parser = SLUParser.from_pretrained(run_dir, device=device, dataset=dataset, **kwargs)
        return cls(model=parser.model, tokenizer=parser.tokenizer, device=parser.device, parser=parser)

    def _sanitize_parameters(self, explain=None, dataset=None, **kwargs):
        if kwargs:  # an option given at call time and dropped would be worse than an error
            raise TypeError(f"the slu pipeline takes explain= and dataset= when called, not {', '.join(kwargs)} "
                            "(top_k and max_length are set when it is built: SLUPipeline.from_pretrained(run, top_k=1))")
        forward_params = {} if explain is None else {"explain": bool(explain)}
        if dataset is not None:
            forward_params["dataset"] = dataset
        return {}, forward_params, {}

    def __call__(self, inputs, *args, batch_size=None, explain=False, dataset=None, **kwargs):
        """A list is parsed in batches by `SLUParser` (same results as `SLUParser(list)`); a single
        string goes through the usual preprocess -> _forward -> postprocess steps. `dataset` (joint
        runs): the dataset whose heads answer, as `SLUParser` takes it."""
        if isinstance(inputs, (list, tuple)):
            self._sanitize_parameters(**kwargs)  # the same refusal of unknown options
            return self.parser(list(inputs), explain=explain, batch_size=batch_size or self._batch_size or 32,
                               dataset=dataset)
        return super().__call__(inputs, *args, explain=explain, dataset=dataset, **kwargs)

    def preprocess(self, inputs):
        if not isinstance(inputs, str):
            raise TypeError(f"the slu pipeline takes a string or a list of strings, not {type(inputs).__name__}")
        return {"text": inputs}

    def _forward(self, model_inputs, explain: bool = False, dataset=None):
        return {"result": self.parser.parse_batch([model_inputs["text"]], explain=explain, datasets=[dataset])[0]}

    def postprocess(self, model_outputs):
        return model_outputs["result"]


if TASK not in PIPELINE_REGISTRY.get_supported_tasks():
    PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=SLUPipeline, pt_model=AutoModel, type="text")

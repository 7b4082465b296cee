"""Load a trained run directory (what `slu-train` writes) with clear errors when it is incomplete."""

from pathlib import Path

from safetensors import safe_open
from transformers import AutoTokenizer

from .joint import joint_datasets
from .modeling import SLUModel

REQUIRED = ("config.json", "model.safetensors", "tokenizer_config.json")


class RunError(ValueError):
    pass


def load_run(run_dir, device: str = "cpu"):
    """Return (model in eval mode, tokenizer) from a run directory or any `save_pretrained` folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    names = joint_datasets(run_dir)
    if names:
        raise RunError(f"{run_dir} is a joint run with one model per dataset; load one of "
                       f"{', '.join(str(run_dir / n) for n in names)} (SLUParser.from_pretrained loads them all)")
    missing = [name for name in REQUIRED if not (run_dir / name).exists()]
    if missing:
        hint = " (training may still be running, or stopped before its first validation)" \
            if (run_dir / "recipe.yaml").exists() else ""
        raise RunError(f"{run_dir}: not a trained run, missing {', '.join(missing)}{hint}")
    try:
        with safe_open(run_dir / "model.safetensors", framework="pt") as f:
            f.keys()
    except Exception as error:  # truncated copy, interrupted write, not a safetensors file
        raise RunError(f"{run_dir}: cannot load the model: model.safetensors is damaged or incomplete "
                       f"({type(error).__name__}: {error}); copy it again or retrain") from error
    try:
        model = SLUModel.from_pretrained(run_dir)
        tokenizer = AutoTokenizer.from_pretrained(run_dir)
    except Exception as error:  # a damaged file: say which run, keep the cause
        raise RunError(f"{run_dir}: cannot load the model ({type(error).__name__}: {error})") from error
    return model.to(device).eval(), tokenizer

"""Load a trained run directory (what `slu-train` writes) with clear errors when it is incomplete."""

from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoTokenizer

from .joint import joint_datasets
from .modeling import SLUModel

REQUIRED = ("config.json", "model.safetensors", "tokenizer_config.json")


class RunError(ValueError):
    pass


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` is the first GPU when torch sees one (CUDA, then Apple MPS), else the CPU; any other
    name ("cpu", "cuda", "cuda:1", "mps") must be usable here, or a RunError says why."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RunError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"device {name!r}: torch {torch.__version__} sees no CUDA GPU here; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise RunError(f"device {name!r}: only {torch.cuda.device_count()} CUDA GPU(s) visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RunError(f"device {name!r}: Apple MPS is not available here; use --device cpu")
    return device


def check_run_files(run_dir: Path) -> None:
    """A RunError unless `run_dir` holds one trained model (what load_run needs)."""
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    names = joint_datasets(run_dir)
    if names:
        raise RunError(f"{run_dir} is a joint run with one model per dataset: give one dataset's folder, "
                       f"{' or '.join(str(run_dir / n) for n in names)}")
    missing = [name for name in REQUIRED if not (run_dir / name).exists()]
    if missing:
        runs = sorted((p.parent for p in run_dir.glob("*/config.json") if (p.parent / "label_maps.json").exists()),
                      key=lambda run: (run.stat().st_mtime, run.name))
        if (run_dir / "recipe.yaml").exists():
            hint = " (training may still be running, or stopped before its first validation)"
        elif runs:  # a folder of runs (runs/): name them, the newest last
            hint = f"; it holds the runs {', '.join(p.name for p in runs[-3:])}" \
                   f"{f' and {len(runs) - 3} more' if len(runs) > 3 else ''}: give one of those"
        else:
            hint = ""
        raise RunError(f"{run_dir}: not a trained run, missing {', '.join(missing)}{hint}")


def load_run(run_dir, device: str = "cpu"):
    """Return (model in eval mode on `device`, see resolve_device, and tokenizer) from a run
    directory or any `save_pretrained` folder."""
    device = resolve_device(device)
    run_dir = Path(run_dir)
    check_run_files(run_dir)
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
    check_vocabulary(run_dir, model.config, tokenizer)
    return model.to(device).eval(), tokenizer


def check_vocabulary(run_dir: Path, config, tokenizer) -> None:
    """A RunError when the tokenizer does not fit the model's embeddings: without its vocabulary
    file (tokenizer.json, vocab.txt) transformers builds a tokenizer of a handful of special tokens
    that maps every word to [UNK], and the run answers confidently wrong."""
    trained = getattr(config, "tokenizer_size", None)  # recorded by slu-train since 2026-12-03
    if trained:
        fits = len(tokenizer) == trained
    else:  # an older run: the embeddings' size, which a (model.tokenizer) tokenizer may fall a little short of
        trained = (config.encoder_config or {}).get("vocab_size") if config.encoder_type == "hf" else config.vocab_size
        fits = not trained or 0.9 * trained <= len(tokenizer) <= trained
    if not fits:
        files = ", ".join(sorted(p.name for p in run_dir.glob("*") if p.name.startswith(("tokenizer", "vocab",
                                                                                          "special_tokens"))))
        raise RunError(f"{run_dir}: the tokenizer has {len(tokenizer)} tokens but the model was trained with "
                       f"{trained}: its vocabulary file is missing or from another model (tokenizer files here: "
                       f"{files or 'none'}); copy the run's tokenizer.json again or retrain")


def readable_weights(folder: Path) -> None:
    """safetensors (0.8) writes its files readable by their owner only (0600), unlike every other
    file of a run: give them the mode a new file in `folder` gets, so that a service or a shared
    runs folder can load the model."""
    probe = Path(folder) / ".mode-probe"
    probe.touch()
    mode = probe.stat().st_mode & 0o666
    probe.unlink()
    for path in Path(folder).glob("*.safetensors"):
        path.chmod(mode)

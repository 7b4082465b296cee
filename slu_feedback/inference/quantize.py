"""Dynamic int8 quantisation for CPU inference.

`quantize_model(model)` returns a copy whose `nn.Linear` layers (encoder projections, heads and
feedback amplifiers) run with int8 weights and dynamically quantised activations
(`torch.ao.quantization.quantize_dynamic`). Embeddings, layer norms and the CRF stay fp32.
Typically 2-3x faster than fp32 on CPU for transformer encoders at a small accuracy cost; check
the cost on your data with `slu-eval RUN_DIR --quantize`.
"""

import warnings

import torch
from torch import nn


def quantize_model(model, dtype=torch.qint8, inplace: bool = False):
    """An int8 dynamically quantised copy of `model` (on CPU, in eval mode)."""
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("dynamic int8 quantisation runs on CPU; load the run with device='cpu'")
    engines = torch.backends.quantized.supported_engines
    if torch.backends.quantized.engine == "none" or torch.backends.quantized.engine not in engines:
        for engine in ("x86", "fbgemm", "qnnpack"):
            if engine in engines:
                torch.backends.quantized.engine = engine
                break
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices (moving to torchao)
        from torch.ao.quantization import quantize_dynamic

        quantized = quantize_dynamic(model.eval(), {nn.Linear}, dtype=dtype, inplace=inplace)
    return quantized.eval()


def count_quantized(model) -> int:
    """How many layers of `model` are dynamically quantised (for reports and tests)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return sum(isinstance(m, DynamicLinear) for m in model.modules())

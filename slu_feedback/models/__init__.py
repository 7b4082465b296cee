from .config import DEFAULT_FEEDBACK, SLUConfig
from .encoders import encoder_config_dict, resolve_encoder
from .modeling import SLUModel, SLUOutput
from .run import RunError, load_run, resolve_device

__all__ = ["SLUConfig", "SLUModel", "SLUOutput", "DEFAULT_FEEDBACK", "resolve_encoder", "encoder_config_dict", "load_run", "RunError", "resolve_device"]

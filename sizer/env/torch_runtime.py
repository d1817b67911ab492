"""torch on this machine: whether the torch extra is installed (naming the command that needs it), which
devices it can use and how much memory they give this process, the UUID of the GPU in use.
"""

from __future__ import annotations

from sizer.env.proc import meminfo_available_bytes
from sizer.errors import UsageError

TORCH_EXTRA = "pip install 'sizer-llm[torch]'"


def require_torch(command: str):
    """torch, after checking that the torch extra's packages import; `command` names who needs them."""
    try:
        import accelerate  # noqa: F401  (transformers needs it for device_map)
        import torch
        import transformers  # noqa: F401
    except ImportError as e:
        raise UsageError(f"{command} needs torch, transformers and accelerate ({e.name} is missing): "
                         f"{TORCH_EXTRA}") from None
    return torch


def cuda_device_uuid() -> str | None:
    """The UUID of the GPU torch runs on (NVML finds it by that, whatever CUDA_VISIBLE_DEVICES holds);
    None without torch or CUDA."""
    try:
        import torch
    except ImportError:
        return None
    try:
        return str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid)
    except (AttributeError, RuntimeError, AssertionError):
        return None


def check_device(device: str, command: str) -> int:
    """Bytes the device can give this process; UsageError when the device is absent (or torch, which
    `command` needs)."""
    torch = require_torch(command)
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available here (torch sees none); use --device cpu")
        free, _total = torch.cuda.mem_get_info()
        return free
    if device != "cpu":
        raise UsageError(f"--device must be cpu or cuda, got {device!r}")
    return meminfo_available_bytes()

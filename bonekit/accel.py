"""Where torch work runs: device choice, mixed-precision dtype, out-of-memory detection.

Shared by every deep-learning part of BoneKit (super-resolution, synthetic CT, DRRs): CUDA when
present, else the CPU, chosen at run time.
"""

from __future__ import annotations

from .errors import BoneKitError


def resolve_device(device: str = "auto") -> str:
    """"auto" -> "cuda" when a CUDA GPU is usable, else "cpu"; an unusable request is an error."""
    import torch

    device = (device or "auto").lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BoneKitError(f"Device '{device}' asked for, but this PyTorch has no usable CUDA GPU "
                               f"(torch {torch.__version__}); use --device cpu or auto.")
        return device
    if device == "cpu":
        return device
    raise BoneKitError(f"Unknown device '{device}': use auto, cuda, cuda:N or cpu.")


def autocast_dtype(device: str, precision: str):
    import torch

    precision = (precision or "auto").lower()
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise BoneKitError(f"Unknown precision '{precision}': use auto, fp32, bf16 or fp16.")
    if precision == "auto":
        if not device.startswith("cuda"):
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA (or CPU allocator) out-of-memory error, whatever its exact class."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)

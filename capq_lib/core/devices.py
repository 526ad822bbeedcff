"""Which torch device an experiment runs on: ``auto`` takes CUDA when present."""

from __future__ import annotations

import torch

from capq_lib.core.validate import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Map auto/cpu/cuda[:i] to a torch.device, refusing CUDA where there is none."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={name!r} was asked for, but torch sees no CUDA GPU on this machine; "
                f"allowed here: 'auto' or 'cpu'"
            )
        return torch.device(name)
    raise ConfigError(f"device must be one of 'auto', 'cpu', 'cuda' or 'cuda:N'; got {name!r}")


def describe(device: torch.device) -> str:
    """A human-readable device name for provenance records."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"

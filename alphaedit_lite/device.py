"""Choose the compute device once: CUDA if present, then Apple's MPS, then the CPU.

Never hard-code `.cuda()` anywhere in the kit: call `pick_device()` (or pass `device=`) instead.
"""
from __future__ import annotations

import os

import torch


def pick_device(preferred: str | torch.device | None = None) -> torch.device:
    """Return the device to use.

    `preferred` (or the environment variable ``ALPHAEDIT_DEVICE``) wins when given, e.g. "cpu".
    Otherwise CUDA, then MPS, then CPU.
    """
    choice = preferred if preferred is not None else os.environ.get("ALPHAEDIT_DEVICE")
    if choice is not None:
        dev = torch.device(choice)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {choice!r} requested but CUDA is not available; use 'cpu'")
        if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"device {choice!r} requested but MPS is not available; use 'cpu'")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")

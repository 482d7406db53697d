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


def cpu_threads(threads: int | None = None) -> int:
    """Set torch's intra-op CPU threads: ``threads``, or as many as the cores other jobs leave free.

    The automatic choice is ``max(1, min(torch's default, int(cores − load average)))``: on a
    shared CPU, OpenMP threads that spin-wait for a busy sibling core make small matrix products
    10-30× slower (measured: 5 target-optimisation steps of SmolLM2 took 65 s with 2 threads and
    1.9 s with 1 on a loaded 2-core machine). Returns the number of threads now in use.
    """
    import os

    import torch

    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be ≥ 1, got {threads}")
        torch.set_num_threads(int(threads))
        return torch.get_num_threads()
    try:
        free = (os.cpu_count() or 1) - os.getloadavg()[0]
    except (OSError, AttributeError):   # no load average on this platform: keep torch's default
        return torch.get_num_threads()
    torch.set_num_threads(max(1, min(torch.get_num_threads(), int(free))))
    return torch.get_num_threads()

"""Choose the compute device once: CUDA if present, then Apple's MPS, then the CPU.

Never hard-code `.cuda()` anywhere in the kit: call `pick_device()` (or pass `device=`) instead.
"""
from __future__ import annotations

import functools
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


def has_fast_bfloat16(device: str | torch.device) -> bool:
    """Whether bfloat16 matrix products are likely faster than float32 on ``device``.

    CUDA: when the GPU supports bf16. CPU: only when it has bf16 instructions (``avx512_bf16`` or
    ``amx_bf16`` on x86, ``bf16`` on Arm, read from Linux's /proc/cpuinfo); elsewhere bf16 on the CPU
    is emulated and can be slower than float32, so the answer is False. MPS: False (not measured).
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return dev.type == "cpu" and bool(_cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_compute_dtype(choice: str, device: str | torch.device, what: str = "dtype") -> str:
    """``"float32"`` or ``"bfloat16"`` for a setting that may also be ``"auto"`` (bf16 where it is fast).

    Used by the target optimisation (``v_dtype``) and the key statistics (``mom2_forward_dtype``).
    """
    if choice not in ("float32", "bfloat16", "auto"):
        raise ValueError(f"{what} must be 'float32', 'bfloat16' or 'auto', got {choice!r}")
    if choice == "auto":
        return "bfloat16" if has_fast_bfloat16(device) else "float32"
    return choice


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """The words of Linux's /proc/cpuinfo (read once per process); empty where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return frozenset(f.read().split())
    except OSError:
        return frozenset()


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

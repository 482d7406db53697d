"""Shared fixtures for the test suite: seeded generators, keys with a known spectrum, a private cache.

Keys follow the kit's convention: columns, `K0` has shape `(d, n)`.
"""
from __future__ import annotations

import os

import pytest
import torch

from alphaedit_lite.util.paths import cache_dir, shared_data_dir


def _keys_with_spectrum(d: int, rank: int, n: int, noise: float = 0.0, seed: int = 0,
                        lam_min: float = 1.0, lam_max: float = 100.0) -> torch.Tensor:
    """K0 (d, n), float64, whose covariance K0 K0ᵀ/n has `rank` eigenvalues log-spaced in
    [lam_min, lam_max] (exactly, when noise = 0) and d - rank zero eigenvalues; `noise` adds
    i.i.d. N(0, noise²) entries, i.e. roughly noise² to every eigenvalue."""
    if not 0 <= rank <= min(d, n):
        raise ValueError(f"rank must be in [0, min(d, n)] = [0, {min(d, n)}], got {rank}")
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, rank, generator=g, dtype=torch.float64))  # (d, r)
    V, _ = torch.linalg.qr(torch.randn(n, rank, generator=g, dtype=torch.float64))  # (n, r)
    lam = torch.logspace(torch.log10(torch.tensor(lam_min)).item(), torch.log10(torch.tensor(lam_max)).item(),
                         rank, dtype=torch.float64) if rank else torch.zeros(0, dtype=torch.float64)
    K0 = Q @ torch.diag((n * lam).sqrt()) @ V.T  # (d, n), K0 K0ᵀ / n = Q diag(lam) Qᵀ
    if noise:
        K0 = K0 + noise * torch.randn(d, n, generator=g, dtype=torch.float64)
    return K0


@pytest.fixture(scope="session")
def make_keys():
    """Factory `make_keys(d, rank, n, noise=0.0, seed=0, lam_min=1.0, lam_max=100.0)` -> K0 (d, n).

    Session-scoped so hypothesis tests may use it (it is a pure function).
    """
    return _keys_with_spectrum


@pytest.fixture
def gen():
    """A seeded torch.Generator for tests that need a few random tensors."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's small-matrix tests on one intra-op thread, then restore the setting.

    On a shared 2-core machine, OpenMP threads that spin-wait for a busy sibling core make
    64×64 linear algebra ~10× slower; one thread is faster for matrices this small.
    Opt in with `pytestmark = pytest.mark.usefixtures("single_thread")`.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------- real model
@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A temporary cache folder that reuses the real dequantized model and context prefixes.

    The in-memory projector cache is emptied too, so that P is computed and written into this folder."""
    from alphaedit_lite.locate.stats import clear_projector_memo

    clear_projector_memo()
    real = cache_dir()
    tmp = tmp_path / "cache"
    tmp.mkdir()
    for name in ("models", "context_templates"):
        (real / name).mkdir(parents=True, exist_ok=True)
        os.symlink(real / name, tmp / name)
    monkeypatch.setenv("ALPHAEDIT_CACHE", str(tmp))
    threads = torch.get_num_threads()   # the command may lower it on a busy CPU
    yield tmp
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_corpus(tmp_path):
    shared = shared_data_dir()
    wiki = shared / "wikitext-2-raw" / "wiki.test.raw" if shared else None
    if wiki is not None and wiki.is_file():
        text = wiki.read_text(encoding="utf-8")[:40_000]
    else:
        text = ("The city lies on a river . Its old town has a cathedral , a market and a university . "
                "In 1850 a railway reached the town , and the population grew to 40 @,@ 000 . ") * 200
    p = tmp_path / "tiny_corpus.txt"
    p.write_text(text, encoding="utf-8")
    return p

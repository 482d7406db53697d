"""Hidden-state drift: how far do a model's representations of unedited facts move under editing?

The AlphaEdit paper (Sec. 4.3, Fig. 5) shows that after thousands of sequential MEMIT edits the
hidden states of unedited prompts drift away from where they were, while AlphaEdit's stay put.
This module measures that on a fixed set of probe prompts:

- `hidden_states`: the residual stream at the prompts' last token after chosen layers;
- `relative_drift`: mean over prompts of ‖h_after − h_before‖ / ‖h_before‖;
- `shift_measures`: the paper's distribution-shift view in a 2-D embedding (PCA or t-SNE, from
  scikit-learn): overlap of the marginal distributions, Hausdorff distance between the point
  clouds, and the share of post-edit points inside the pre-edit region (its convex hull).
"""
from __future__ import annotations

import numpy as np
import torch

FINAL = "final"


@torch.no_grad()
def hidden_states(model, tok, prompts: list[str], layers: list[int], batch_size: int = 32,
                  include_final: bool = True, positions: list[int] | None = None) -> dict:
    """Residual stream at each prompt's last token: {layer: (n, d), "final": (n, d)} on the CPU.

    `layers` index decoder layers from 0; the value for layer l is that layer's output.
    "final" is the last hidden state the model returns (after its final norm, for Llama), always at
    the last token, where the answer is read. `positions` (one token index per prompt) reads the
    `layers` there instead, e.g. at the subject's last token, where keys are read and edits written.
    """
    if not prompts:
        raise ValueError("hidden_states needs at least one probe prompt")
    if positions is not None and len(positions) != len(prompts):
        raise ValueError(f"positions gives {len(positions)} token indices for {len(prompts)} prompts; give one per prompt")
    n_layers = model.config.num_hidden_layers
    for l in layers:
        if not 0 <= l < n_layers:
            raise ValueError(f"layer {l} is out of range: the model has layers 0..{n_layers - 1}")
    device = next(model.parameters()).device
    out: dict = {l: [] for l in layers}
    if include_final:
        out[FINAL] = []
    old_side = tok.padding_side
    tok.padding_side = "right"
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tok(prompts[i:i + batch_size], return_tensors="pt", padding=True).to(device)
            res = model(**enc, output_hidden_states=True)
            last = enc["attention_mask"].sum(1) - 1                     # (b,) index of last real token
            rows = torch.arange(last.numel(), device=device)
            at = last
            if positions is not None:
                at = torch.tensor(positions[i:i + batch_size], device=device)
                if bool((at < 0).any() or (at > last).any()):
                    bad = int(torch.nonzero((at < 0) | (at > last))[0, 0]) + i
                    raise ValueError(f"positions[{bad}] = {positions[bad]} is not a token of prompt {bad} "
                                     f"({prompts[bad]!r} has {int(last[bad - i]) + 1} tokens)")
            for l in layers:
                out[l].append(res.hidden_states[l + 1][rows, at].float().cpu())
            if include_final:
                out[FINAL].append(res.hidden_states[-1][rows, last].float().cpu())
    finally:
        tok.padding_side = old_side
    return {k: torch.cat(v) for k, v in out.items()}


def relative_drift(before: torch.Tensor, after: torch.Tensor) -> float:
    """Mean over prompts of ‖h_after − h_before‖ / ‖h_before‖ (rows are prompts)."""
    if before.shape != after.shape:
        raise ValueError(f"before {tuple(before.shape)} and after {tuple(after.shape)} must have the same shape")
    num = (after - before).norm(dim=-1)
    den = before.norm(dim=-1).clamp_min(1e-12)
    return float((num / den).mean())


_EMBED_CACHE: dict = {}   # (method, seed, digest of the points) -> embedding; a t-SNE takes seconds
_EMBED_CACHE_SIZE = 32


def embed_2d(before: np.ndarray, after: np.ndarray, method: str = "pca", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Project both point clouds into one 2-D embedding (fitted on their union).

    The last few embeddings are remembered (keyed by the points' bytes), so a figure and a table of
    the same states share one t-SNE; the result is a copy, identical to a fresh computation.
    """
    import hashlib

    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    both = np.concatenate([before, after])
    key = (method, seed, len(before), both.shape, hashlib.sha1(np.ascontiguousarray(both).tobytes()).hexdigest())
    if key in _EMBED_CACHE:
        z = _EMBED_CACHE[key].copy()
        return z[: len(before)], z[len(before):]
    if method == "pca":
        from sklearn.decomposition import PCA
        z = PCA(n_components=2, random_state=seed).fit_transform(both)
    elif method == "tsne":
        from sklearn.manifold import TSNE
        perplexity = float(min(30, max(5, (len(both) - 1) // 4)))
        z = TSNE(n_components=2, random_state=seed, init="pca", perplexity=perplexity).fit_transform(both)
    else:
        raise ValueError(f"unknown embedding method {method!r}; choose 'pca' or 'tsne'")
    if len(_EMBED_CACHE) >= _EMBED_CACHE_SIZE:
        _EMBED_CACHE.pop(next(iter(_EMBED_CACHE)))
    _EMBED_CACHE[key] = z.copy()
    return z[: len(before)], z[len(before):]


def marginal_overlap(a: np.ndarray, b: np.ndarray, bins: int = 30) -> float:
    """Mean over the 2 axes of the overlap coefficient Σ min(p, q) of the two histograms (1 = same)."""
    vals = []
    for j in range(a.shape[1]):
        lo, hi = min(a[:, j].min(), b[:, j].min()), max(a[:, j].max(), b[:, j].max())
        edges = np.linspace(lo, hi + 1e-12, bins + 1)
        p = np.histogram(a[:, j], edges)[0] / len(a)
        q = np.histogram(b[:, j], edges)[0] / len(b)
        vals.append(float(np.minimum(p, q).sum()))
    return float(np.mean(vals))


def hausdorff(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Hausdorff distance between two point clouds."""
    from scipy.spatial.distance import directed_hausdorff
    return float(max(directed_hausdorff(a, b)[0], directed_hausdorff(b, a)[0]))


def share_inside(region: np.ndarray, points: np.ndarray) -> float:
    """Share of `points` inside the convex hull of `region` (2-D)."""
    from scipy.spatial import Delaunay
    return float((Delaunay(region).find_simplex(points) >= 0).mean())


def shift_measures(before: torch.Tensor, after: torch.Tensor, method: str = "pca", seed: int = 0) -> dict:
    """The paper's distribution-shift figures for one set of hidden states, in a 2-D embedding.

    Distances are divided by the spread of the pre-edit cloud (RMS distance to its mean), so they
    compare across layers and models.
    """
    za, zb = embed_2d(before.numpy(), after.numpy(), method=method, seed=seed)
    scale = float(np.sqrt(((za - za.mean(0)) ** 2).sum(1).mean())) or 1.0
    return {
        "relative_drift": relative_drift(before, after),
        "marginal_overlap": marginal_overlap(za, zb),
        "hausdorff": hausdorff(za, zb) / scale,
        "share_inside": share_inside(za, zb),
        "embedding": method,
    }

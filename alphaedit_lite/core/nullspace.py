"""The null-space projector P of AlphaEdit (Fang et al., ICLR 2025, Sec. 3.2, Eq. 8-9).

With C = K0 K0ᵀ / n = U Λ Uᵀ (eigendecomposition of a symmetric PSD matrix), the directions in
which the preserved keys have (near) zero energy are the eigenvectors Û with small eigenvalues.
P = Û Ûᵀ projects onto them, so for any update Δ, (Δ P) K0 ≈ 0: the outputs W K0 of preserved
knowledge do not move.

How much they can still move is known in advance. For the keys that produced C,
    mean_k ‖P k‖² = trace(P C) = Σ_kept λ_i,
so an update already in the null space (Δ = Δ P) changes preserved outputs by at most
    ‖Δ K0‖_F ≤ ‖Δ‖₂ ‖P K0‖_F = ‖Δ‖₂ · sqrt(n · Σ_kept λ_i).
`Projector.rms_leak` is sqrt(Σ_kept λ_i), `Projector.relative_leak` is ‖P K0‖_F / ‖K0‖_F.

The paper's code takes an SVD of C and keeps singular values below an absolute threshold 2e-2.
For a symmetric PSD matrix singular values are eigenvalues, and `eigh` is cheaper and returns
them sorted; an absolute threshold depends on the keys' scale, so relative modes are offered too.

Input checks. C must be a non-empty, finite, symmetric and positive semi-definite (PSD) matrix:
an indefinite one is not a covariance, and its negative directions (eigenvalue < 0 < threshold)
would be kept by P as "null" although keys do use them. Eigenvalues of a PSD matrix computed in
floating point may come out slightly negative, so C is accepted when

    λ_min ≥ −tol · max(1, λ_max),   tol = max(PSD_RTOL, sqrt(d) · eps),

with PSD_RTOL = 1e-8 and eps the machine epsilon of the lowest precision among C's dtype, the
precision its entries were computed in (`cov_precision`: a float64 sum of float32 batch products
is float32-accurate) and the working `dtype` (float64 throughout: tol = 1e-8; float32 anywhere: tol ≈ 1.2e-7 · sqrt(d),
above the ~3e-7 · λ_max measured for rank-deficient float32 covariances of d ≤ 1024). The check
reuses the eigenvalues P needs anyway, so it costs O(d).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from alphaedit_lite.core.covariance import SecondMoment
from alphaedit_lite.core.validate import as_matrix, check_finite, check_square_symmetric

MODES = ("absolute", "relative", "energy", "rank")
#: Relative tolerance of the PSD check in float64 (module docstring).
PSD_RTOL = 1e-8


@dataclass
class Projector:
    """P = Û Ûᵀ with its diagnostics. Shapes: d = key dimension, r = kept rank."""

    P: torch.Tensor            # (d, d) projector onto the (near-)null space of C
    basis: torch.Tensor        # (d, r) Û, orthonormal columns
    eigenvalues: torch.Tensor  # (d,) eigenvalues of C, ascending
    kept_rank: int             # r = number of directions an update may use
    cutoff: float              # eigenvalues strictly below this were kept
    mode: str
    threshold: float

    @property
    def dim(self) -> int:
        return self.P.shape[0]

    @property
    def kept_eigenvalues(self) -> torch.Tensor:
        return self.eigenvalues[: self.kept_rank]

    @property
    def kept_energy_share(self) -> float:
        """Share of the preserved keys' energy Σλ lying in the kept (editable) directions.

        These are the components the null-space constraint throws away; 0 means exact preservation.
        (Called ``energy_discarded`` before; that name still works.)
        """
        total = float(self.eigenvalues.clamp_min(0).sum())
        return float(self.kept_eigenvalues.clamp_min(0).sum()) / total if total > 0 else 0.0

    energy_discarded = kept_energy_share     # the old name

    @property
    def rms_leak(self) -> float:
        """sqrt(mean ‖P k‖²) over the preserved keys that built C: sqrt(Σ_kept λ)."""
        return math.sqrt(float(self.kept_eigenvalues.clamp_min(0).sum()))

    @property
    def relative_leak(self) -> float:
        """‖P K0‖_F / ‖K0‖_F = sqrt(kept_energy_share)."""
        return math.sqrt(self.energy_discarded)

    @property
    def max_leak(self) -> float:
        """‖P K0‖₂ / sqrt(n) = sqrt(largest kept eigenvalue): the worst direction's leak."""
        return math.sqrt(max(float(self.kept_eigenvalues.max()), 0.0)) if self.kept_rank else 0.0

    def summary(self) -> str:
        return (f"P: kept {self.kept_rank}/{self.dim} directions ({self.mode} threshold {self.threshold:g}, "
                f"eigenvalue cutoff {self.cutoff:.3g}); preserved-key energy in kept directions "
                f"{self.kept_energy_share:.3e}; ‖P K0‖_F/‖K0‖_F = {self.relative_leak:.3e}")


def _check_threshold(mode: str, threshold: float, d: int) -> None:
    """Raise a ValueError for an unknown mode or a threshold that mode cannot use (before any eigh)."""
    if mode not in MODES:
        raise ValueError(f"unknown threshold mode {mode!r}; choose one of {MODES}")
    t = float(threshold)
    if mode == "absolute" and not t > 0:  # `not >` also rejects NaN
        raise ValueError(f"absolute threshold must be > 0 (an eigenvalue of the covariance), got {threshold}")
    if mode == "relative" and not 0 < t < 1:
        raise ValueError(f"relative threshold must be in (0, 1) (a fraction of the largest eigenvalue), got {threshold}")
    if mode == "energy" and not 0 <= t < 1:
        raise ValueError(f"energy threshold must be in [0, 1) (the share of preserved energy allowed to leak), got {threshold}")
    if mode == "rank" and not (math.isfinite(t) and t == int(t) and 0 <= t <= d):
        raise ValueError(f"rank threshold must be an integer in [0, {d}] (the number of directions to keep), got {threshold}")


def psd_tolerance(d: int, *dtypes: torch.dtype) -> float:
    """Relative tolerance of the PSD check: max(PSD_RTOL, sqrt(d) · eps of the lowest precision in `dtypes`)."""
    eps = max(torch.finfo(t).eps for t in dtypes)
    return max(PSD_RTOL, math.sqrt(d) * eps)


def _check_psd(lam: torch.Tensor, rtol: float) -> None:
    """Raise a ValueError unless the ascending eigenvalues `lam` are those of a PSD matrix (within `rtol`)."""
    lo, hi = float(lam[0]), float(lam[-1])
    allowed = rtol * max(1.0, hi)
    if lo < -allowed:
        n_neg = int((lam < -allowed).sum())
        raise ValueError(
            f"the covariance is not positive semi-definite, so it is not a covariance K Kᵀ/n: its smallest "
            f"eigenvalue is {lo:.4g} ({n_neg} below −{allowed:.2g} = −{rtol:.2g}·max(1, λ_max), "
            f"λ_max = {hi:.4g}), and P would treat such negative directions as free to edit ('null'). Such "
            "matrices come from a subtraction (C1 − C2, E[kkᵀ] − μμᵀ) or from accumulating in "
            "float16/bfloat16; recompute C from the keys in float64, e.g. SecondMoment.from_keys(K0).cov")


def _kept_count(lam: torch.Tensor, mode: str, threshold: float) -> tuple[int, float]:
    """Number of smallest eigenvalues to keep, and the eigenvalue cutoff that implies."""
    d = lam.numel()
    _check_threshold(mode, threshold, d)
    lam_pos = lam.clamp_min(0)
    if mode == "absolute":
        r = int((lam < threshold).sum())
        return r, float(threshold)
    if mode == "relative":
        top = float(lam_pos.max())
        if top <= 0:  # no preserved energy at all (C = 0): every direction is free, as in "energy" mode
            return d, float("inf")
        cut = threshold * top
        return int((lam < cut).sum()), cut
    if mode == "energy":
        total = float(lam_pos.sum())
        csum = torch.cumsum(lam_pos, 0)  # ascending eigenvalues: energy of the r smallest
        r = int((csum <= threshold * total).sum()) if total > 0 else d
        cut = float(lam[r]) if r < d else float("inf")
        return r, cut
    r = int(threshold)  # mode == "rank"
    cut = float(lam[r]) if r < d else float("inf")
    return r, cut


def null_space_projector(cov: "torch.Tensor | SecondMoment", threshold: float = 2e-2, mode: str = "absolute",
                         dtype: torch.dtype = torch.float64, allow_empty: bool = False,
                         route: str = "full", cov_precision: torch.dtype | None = None) -> Projector:
    """Build P = Û Ûᵀ from a key covariance C (d, d), or from a `SecondMoment` (its C and precision).

    mode:
      "absolute" keep eigenvalues λ < threshold (the paper: 2e-2 on its covariance scale);
      "relative" keep λ < threshold · λ_max;
      "energy"   keep the smallest eigenvalues whose sum is at most threshold · Σλ
                 (the share of preserved-key energy an update may still touch);
      "rank"     keep exactly `threshold` directions (the smallest eigenvalues).
    Raises when no direction is kept ("no room to edit") unless allow_empty; warns when every
    direction is kept (P = I constrains nothing). `route`: "full" (one torch eigh), "subset"
    (eigenvalues, then only the kept eigenvectors via SciPy), "auto" (subset on the CPU for
    d ≥ 512 when at most half the directions are kept). Default "full".
    `cov_precision`: the dtype C's entries were computed in, when less precise than C's own dtype
    (a float64 sum of float32 batch products: pass `SecondMoment.product_dtype`); the PSD check's
    tolerance follows the least precise of C's dtype, this and `dtype`.

    Raises ValueError for an empty (0×0), non-finite, non-symmetric or indefinite C (the PSD
    tolerance is in the module docstring) and for a `dtype` other than float32/float64.
    """
    if isinstance(cov, SecondMoment):                # its C, at the precision its products were formed in
        cov_precision = cov_precision or cov.product_dtype
        cov = cov.cov
    c = as_matrix("covariance", cov)
    if c.numel() == 0:
        raise ValueError(f"the covariance is empty (shape {tuple(c.shape)}): the key dimension d is 0; build it from "
                         "keys of shape (d, n) with d ≥ 1 and n ≥ 1, e.g. SecondMoment.from_keys(K0).cov")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float64 (the default) or torch.float32 for the eigendecomposition, "
                         f"got {dtype}; half precision cannot resolve the small eigenvalues that define the null space")
    check_finite("covariance", c)
    check_square_symmetric("covariance", c)
    _check_threshold(mode, threshold, c.shape[0])  # fail fast, before an O(d³) eigh
    if cov_precision is not None and cov_precision not in (torch.float32, torch.float64):
        raise ValueError(f"cov_precision must be torch.float32, torch.float64 or None, got {cov_precision}")
    psd_rtol = psd_tolerance(c.shape[0], c.dtype, dtype, *([cov_precision] if cov_precision is not None else []))
    c = c.to(dtype)
    work = c if c.device.type != "mps" else c.cpu()  # no float64 eigh on MPS
    work = (work + work.T) / 2
    d = work.shape[0]
    # Only the kept eigenvectors are needed. route="subset" takes all eigenvalues (cheap) and then
    # just those eigenvectors (LAPACK syevr through SciPy); benchmarks/bench_projector.py measures it
    # (faster on gapped spectra, but much slower on some dense ones here), so it is opt-in.
    subset = route == "subset" or (route == "auto" and work.device.type == "cpu" and d >= 512)
    if route not in ("auto", "full", "subset"):
        raise ValueError(f"route must be 'auto', 'full' or 'subset', got {route!r}")
    U = None
    if subset:
        lam = torch.linalg.eigvalsh(work)               # (d,) ascending
        _check_psd(lam, psd_rtol)
        r, cut = _kept_count(lam, mode, threshold)
        if route == "auto" and not 0 < r <= d // 2:
            subset = False
    if not subset:
        lam, U = torch.linalg.eigh(work)                # ascending eigenvalues, (d,), (d, d)
        _check_psd(lam, psd_rtol)
        r, cut = _kept_count(lam, mode, threshold)
    if r == 0 and not allow_empty:
        raise ValueError(
            f"no room to edit: every direction carries preserved knowledge (smallest eigenvalue "
            f"{float(lam[0]):.3g} is not below the {mode} threshold {threshold:g}); raise the threshold "
            "or use mode='rank' / mode='energy'")
    if r == d:
        warnings.warn(
            f"the {mode} threshold {threshold:g} keeps all {d} directions (largest eigenvalue "
            f"{float(lam[-1]):.3g}), so P = I and nothing is preserved; lower the threshold or check "
            "the covariance's scale", stacklevel=2)
    if U is not None:
        basis = U[:, :r]                                # (d, r)
    elif r == 0:
        basis = work.new_zeros(d, 0)
    else:
        from scipy.linalg import eigh as scipy_eigh
        _, V = scipy_eigh(work.cpu().numpy(), subset_by_index=[0, r - 1], driver="evr", check_finite=False)
        basis = torch.from_numpy(V).to(dtype=work.dtype)  # (d, r), the r smallest eigenvectors
    P = basis @ basis.T         # (d, d)
    return Projector(P=P.to(c.device), basis=basis.to(c.device), eigenvalues=lam.to(c.device), kept_rank=r,
                     cutoff=cut, mode=mode, threshold=float(threshold))


def projector_from_keys(K0: torch.Tensor, **kwargs) -> Projector:
    """Convenience: P from a key matrix with keys as columns `(d, n)`, using C = K0 K0ᵀ / n."""
    K0 = as_matrix("K0", K0).to(torch.float64)
    if K0.shape[1] == 0:
        raise ValueError(f"K0 has no keys (shape {tuple(K0.shape)}); pass the preserved keys as columns, shape (d, n) "
                         "with n ≥ 1")
    return null_space_projector(K0 @ K0.T / K0.shape[1], **kwargs)

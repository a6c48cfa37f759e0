"""The ``rgraph`` command: inspect a cell, train it, measure variance and speed, demo.

Every subcommand has ``--help``; bad options and unreadable files get a one-line error
(exit status 2), never a traceback.
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import sys
import time
from pathlib import Path

import numpy as np

BUILTIN = ("tanh", "rhn", "lstm", "gru", "influence")


class CLIError(Exception):
    """A user mistake on the command line: printed as one line, exit status 2."""


# ---------------------------------------------------------------------------- cells
def load_cell(spec: str, n_in: int, hidden: int, n_out: int, **kw):
    """A built-in cell name, or ``path/to/file.py:function`` (called with
    (n_in, hidden, n_out) when it takes three arguments, else with none)."""
    import rgraph as rg
    if spec in BUILTIN:
        if spec == "influence":
            return rg.cells.influence_balancing(hidden if hidden else 23,
                                                kw.get("n_minus") or 13)
        fn = rg.cells.CELLS[spec]
        extra = {"nonlinearity": kw["nonlinearity"]} if spec == "rhn" and \
            kw.get("nonlinearity") else {}
        return fn(n_in, hidden, n_out, **extra)
    if ":" not in spec:
        raise CLIError(f"unknown cell {spec!r}: use one of {', '.join(BUILTIN)} or "
                       f"path/to/file.py:function")
    path, func = spec.rsplit(":", 1)
    if not os.path.isfile(path):
        raise CLIError(f"cannot read {path!r}: no such file")
    try:
        mspec = importlib.util.spec_from_file_location(Path(path).stem, path)
        mod = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(mod)
    except Exception as e:  # the user's file failed to import
        raise CLIError(f"cannot import {path!r}: {type(e).__name__}: {e}") from None
    fn = getattr(mod, func, None)
    if not callable(fn):
        raise CLIError(f"{path!r} has no function {func!r}")
    try:
        nparams = len(inspect.signature(fn).parameters)
        cell = fn(n_in, hidden, n_out) if nparams >= 3 else fn()
    except rg.RGraphError as e:
        raise CLIError(f"{spec}: {e}") from None
    except Exception as e:
        raise CLIError(f"{spec}: {type(e).__name__}: {e}") from None
    if not isinstance(cell, rg.Cell):
        raise CLIError(f"{spec} returned {type(cell).__name__}, not an rgraph Cell")
    return cell


def estimator_options(args) -> dict:
    opts = {}
    for key in ("projection", "rank", "T", "k_dirs", "window", "directions"):
        val = getattr(args, key, None)
        if val is not None:
            opts["k" if key == "k_dirs" else key] = val
    return opts


# ----------------------------------------------------------------------- commands
def cmd_inspect(args):
    import rgraph as rg
    cell = load_cell(args.cell, args.n_in, args.hidden, args.n_out,
                     nonlinearity=args.nonlinearity)
    print(cell)
    print()
    an = rg.analyze(cell)
    print(an.report())
    if args.dot:
        cell.to_dot(args.dot)
        print(f"\nwrote the graph to {args.dot} (render: dot -Tpng {args.dot} -o graph.png)")
    if args.estimator:
        loss = "mse" if args.cell == "influence" else "softmax_xent"
        est = rg.compile(cell, args.estimator, loss=loss, backend=args.backend,
                         **estimator_options(args))
        print(f"\n{est}")
        if args.source:
            print(f"# {est.path}\n")
            print(est.source)


def cmd_demo(args):
    from .demo import run_demo
    run_demo(out=args.out, seconds=args.seconds, hidden=args.hidden)


# ------------------------------------------------------------------------ parser
def add_cell_args(p, hidden=16):
    p.add_argument("cell", help=f"a built-in cell ({', '.join(BUILTIN)}) or "
                                f"path/to/file.py:function")
    p.add_argument("--n-in", type=int, default=8, help="input size (default 8)")
    p.add_argument("--hidden", "-n", type=int, default=hidden,
                   help=f"state size per state vector (default {hidden})")
    p.add_argument("--n-out", type=int, default=8, help="output size (default 8)")
    p.add_argument("--nonlinearity", choices=["tanh", "2sigmoid-1"],
                   help="rhn only: the non-linearity")


def add_estimator_args(p):
    p.add_argument("--backend", choices=["numba", "numpy"], default="numba")
    p.add_argument("--projection", help="projected-uoro: state, preactivation, parameter "
                                        "or comma-separated node names")
    p.add_argument("--rank", type=int, help="uoro: number of rank-one pairs")
    p.add_argument("--T", type=int, help="uoro: steps per transition (UORO-T)")
    p.add_argument("--directions", choices=["random", "partitioned", "candidate"],
                   help="dodge: how directions are drawn")
    p.add_argument("--k-dirs", type=int, help="dodge: number of directions")
    p.add_argument("--window", type=int, help="dodge: steps a direction is held")


def build_parser():
    ap = argparse.ArgumentParser(
        prog="rgraph", description="A compiler for online gradient estimators of recurrent "
                                   "networks: inspect cells, train, measure variance and speed.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("inspect", help="the graph, its analysis, and generated code",
                       description="Print a cell's graph listing, its analysis (projection "
                                   "spaces, Kronecker verdict) and, with --estimator E "
                                   "--source, the generated code.")
    add_cell_args(p)
    add_estimator_args(p)
    p.add_argument("--estimator", "-e", help="compile this estimator (e.g. kf-rtrl, uoro, "
                                             "tbptt(16))")
    p.add_argument("--source", action="store_true", help="print the generated module")
    p.add_argument("--dot", metavar="FILE", help="write the graph in Graphviz DOT")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("demo", help="a short tour on a built-in LSTM, with a plot",
                       description="Analyse a built-in LSTM, then train it online with "
                                   "KF-RTRL, UORO and TBPTT on a^n b^n and plot the curves.")
    p.add_argument("--out", default="runs/demo", help="folder for the plot and the CSV")
    p.add_argument("--seconds", type=float, default=40.0,
                   help="training time per estimator (default 40)")
    p.add_argument("--hidden", type=int, default=32, help="LSTM size (default 32)")
    p.set_defaults(func=cmd_demo)
    return ap


def main(argv=None):
    import rgraph as rg
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        args.func(args)
    except CLIError as e:
        print(f"rgraph {args.command}: {e}", file=sys.stderr)
        return 2
    except (rg.RGraphError, ValueError, TypeError, OSError) as e:
        print(f"rgraph {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rgraph {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

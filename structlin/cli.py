"""The ``structlin`` command (also ``python -m structlin``): ``demo``, ``report`` and ``bench``.

    structlin demo [--quick] [--out structlin-demo] [--threads 1] [--only acdc-8,lowrank-16]
    structlin report MODULE:ATTR --input-size 8 64 [--input-size …] [--dtype float32] [--no-backward]
    structlin bench [--quick] [--out docs/figures] [--benchmarks benchmarks] [-- extra pytest arguments]
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

import structlin

from .layers.base import StructuredLayer


def _forward_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass of ``model`` on ``x``, as :func:`structlin.report` measures them."""
    return int(structlin.report(model, x, backward=False).total.forward_flops)


# ------------------------------------------------------------------------------------------------------ demo


def _demo(args: argparse.Namespace) -> int:
    from .demo import run

    only = [s for s in args.only.split(",") if s] if args.only else None
    return run(Path(args.out), quick=args.quick, threads=args.threads, flops=_forward_flops, only=only)


# ---------------------------------------------------------------------------------------------------- report


def load_object(spec: str) -> nn.Module:
    """``"package.module:attr"`` → the ``nn.Module`` it names; a class or function there is called with no
    arguments to build one. The current directory is importable, as with ``python -m``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"expected MODULE:ATTR (e.g. 'mypackage.models:build_model'), got {spec!r}")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        obj = importlib.import_module(module_name)
    except ImportError as error:
        raise SystemExit(f"cannot import {module_name!r}: {error}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise SystemExit(f"{module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, nn.Module) and callable(obj):
        obj = obj()
    if not isinstance(obj, nn.Module):
        raise SystemExit(f"{spec} is a {type(obj).__name__}, not an nn.Module (or something that builds one)")
    return obj


def _report(args: argparse.Namespace) -> int:
    dtype = getattr(torch, args.dtype, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise SystemExit(f"--dtype must be a floating-point torch dtype such as float32, got {args.dtype!r}")
    model = load_object(args.model).to(dtype)
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(*size, generator=generator).to(dtype) for size in args.input_size]
    print(structlin.report(model, *inputs, backward=not args.no_backward))
    return 0


# ----------------------------------------------------------------------------------------------------- bench


def _default_benchmarks() -> Path | None:
    for root in (Path.cwd(), Path(__file__).resolve().parent.parent):
        if (root / "benchmarks" / "conftest.py").is_file():
            return root / "benchmarks"
    return None


def plot_benchmarks(data: dict, out: Path) -> list[Path]:
    """One PNG per benchmark family (group name without ``N=…``): median time vs N, a line per implementation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for bench in data["benchmarks"]:
        group = bench.get("group") or bench["name"]
        size = re.search(r"N=(\d+)", group)
        if size is None or bench.get("stats") is None:
            continue
        family = re.sub(r"\s*N=\d+", "", group).strip()
        impl = (bench.get("params") or {}).get("impl") or bench["name"]
        families[family][impl].append((int(size.group(1)), bench["stats"]["median"]))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for family, impls in sorted(families.items()):
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for impl, points in sorted(impls.items()):
            points.sort()
            ax.plot([n for n, _ in points], [t * 1e3 for _, t in points], marker="o", label=impl)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("N")
        ax.set_ylabel("median time (ms)")
        ax.set_title(family)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"bench_{re.sub(r'[^A-Za-z0-9]+', '_', family).strip('_')}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _bench(args: argparse.Namespace) -> int:
    benchmarks = Path(args.benchmarks) if args.benchmarks else _default_benchmarks()
    if benchmarks is None or not benchmarks.is_dir():
        raise SystemExit("no benchmarks/ folder found: run from a structlin checkout or pass --benchmarks PATH")
    try:
        import pytest_benchmark  # noqa: F401
    except ImportError:
        raise SystemExit("structlin bench needs pytest-benchmark: install structlin[bench]") from None
    sizes = args.sizes or ("64,256" if args.quick else "256,1024,4096,16384")
    extra = [a for a in args.pytest_args if a != "--"]
    with tempfile.TemporaryDirectory() as tmp:
        json_path = Path(tmp) / "bench.json"
        command = [sys.executable, "-m", "pytest", str(benchmarks), "-q", "-p", "no:cacheprovider",
                   f"--sizes={sizes}", "--benchmark-only", f"--benchmark-json={json_path}"]
        if args.quick:
            command += ["--benchmark-min-rounds=1", "--benchmark-max-time=0.001", "--benchmark-warmup=off"]
        command += extra
        print("running:", " ".join(command), flush=True)
        code = subprocess.call(command, cwd=benchmarks.parent)
        if code != 0 or not json_path.is_file():
            print(f"the benchmarks failed (pytest exit code {code})", file=sys.stderr)
            return code or 1
        data = json.loads(json_path.read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(data, indent=1))
    for path in plot_benchmarks(data, out):
        print(f"wrote {path}")
    print(f"wrote {out / 'bench.json'}")
    return 0


# ------------------------------------------------------------------------------------------------------ main


def _input_size(text: str) -> tuple[int, ...]:
    try:
        size = tuple(int(s) for s in re.split(r"[,x ]+", text.strip()) if s)
    except ValueError:
        size = ()
    if not size or any(s < 0 for s in size):
        raise argparse.ArgumentTypeError(f"an input size is non-negative ints like 8,64 or 8x64, got {text!r}")
    return size


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="structlin", description="structured linear layers for PyTorch")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{demo,report,bench}")

    demo = commands.add_parser("demo", help="train a dense MLP on digits, swap its layers for each kind, compare")
    demo.add_argument("--quick", action="store_true", help="a few epochs only (a smoke test, under a minute)")
    demo.add_argument("--out", default="structlin-demo", help="folder for demo.json and demo.png")
    demo.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    demo.add_argument("--only", default=None, help="comma-separated variant labels or kinds to run")
    demo.set_defaults(run=_demo)

    report = commands.add_parser("report", help="parameter/FLOP table of an importable model")
    report.add_argument("model", help="MODULE:ATTR naming an nn.Module, or a class/function that builds one")
    report.add_argument("--input-size", type=_input_size, action="append", required=True,
                        help="shape of one example input, e.g. 8,64; repeat for several inputs")
    report.add_argument("--dtype", default="float32")
    report.add_argument("--no-backward", action="store_true", help="count the forward pass only")
    report.set_defaults(run=_report)

    bench = commands.add_parser("bench", help="run benchmarks/ and plot time vs N per benchmark family")
    bench.add_argument("--quick", action="store_true", help="sizes 64,256 and one round each (a smoke test)")
    bench.add_argument("--out", default="docs/figures", help="folder for the PNGs and bench.json")
    bench.add_argument("--benchmarks", default=None, help="the benchmarks folder (default ./benchmarks)")
    bench.add_argument("--sizes", default=None, help="comma-separated N (default 256,1024,4096,16384)")
    bench.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: extra pytest arguments")
    bench.set_defaults(run=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

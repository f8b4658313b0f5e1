"""The ``structlin`` command (also ``python -m structlin``): ``demo``, ``report`` and ``bench``.

    structlin demo [--quick] [--out structlin-demo] [--threads 1] [--only acdc-8,lowrank-16]
    structlin report MODULE:ATTR --input-size 8,64 [--input-size …] [--dtype float32] [--no-backward]
    structlin bench [--quick] [--out docs/figures] [--benchmarks benchmarks] [-- extra pytest arguments]
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
import traceback
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


class UsageError(Exception):
    """A bad command-line argument found after parsing (a model that cannot be loaded, inputs it rejects);
    :func:`main` shows it as an argparse error: the usage, the message, exit code 2."""


def _current_directory_last() -> None:
    """Make the current directory importable without letting it shadow installed modules: drop the entries of
    ``sys.path`` that name it (``python -m`` puts it first) and append it at the end."""
    cwd = os.path.realpath(os.getcwd())
    sys.path[:] = [entry for entry in sys.path if os.path.realpath(entry or os.curdir) != cwd] + [cwd]


def _brief(error: BaseException) -> str:
    """``Type: message``, then the file and line that raised it when that is neither this module nor the import
    machinery."""
    machinery = os.path.dirname(importlib.__file__)
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename != __file__
              and not frame.filename.startswith("<") and os.path.dirname(frame.filename) != machinery]
    where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}"


def _shadowing_note(module_name: str) -> str:
    """A note for when the current directory has a module of that name that an installed one took precedence
    over (the current directory comes last on ``sys.path``); empty otherwise."""
    top = module_name.partition(".")[0]
    local = [path for path in (Path(top + ".py"), Path(top) / "__init__.py") if path.is_file()]
    imported = getattr(sys.modules.get(top), "__file__", None)
    if not local or imported is None or Path(imported).resolve() == local[0].resolve():
        return ""
    return f" (the installed {top!r} at {imported} comes before ./{local[0]}: rename the local file)"


def _import_user_module(module_name: str):
    """The module, or a :class:`UsageError` with what went wrong while importing it."""
    try:
        return importlib.import_module(module_name)
    except Exception as error:  # anything the user's module raises while it is imported, shown briefly
        raise UsageError(f"cannot import {module_name!r}: {_brief(error)}") from None


def _missing_arguments(builder) -> list[str]:
    """The parameters ``builder`` needs and has no default for (none where its signature is unknown)."""
    try:
        parameters = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):
        return []
    needed = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
              inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in parameters if p.kind in needed and p.default is inspect.Parameter.empty]


def load_object(spec: str) -> nn.Module:
    """``"package.module:attr"`` → the ``nn.Module`` it names; a class or function there is called with no
    arguments to build one. The current directory is importable, after the installed modules (a stray
    ``sympy.py`` there does not replace sympy). Raises :class:`UsageError` for a spec that names no model."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"expected MODULE:ATTR (e.g. 'mypackage.models:build_model'), got {spec!r}")
    _current_directory_last()
    obj = _import_user_module(module_name)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{module_name!r} has no attribute {attr!r}{_shadowing_note(module_name)}")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise UsageError(f"{spec} is a {type(obj).__name__}, not an nn.Module (or something that builds one)")
    missing = _missing_arguments(obj)
    if missing:
        raise UsageError(f"{spec} needs arguments ({', '.join(missing)}) and is called with none: name an "
                         "nn.Module, or a function that builds one without arguments")
    model = obj()
    if not isinstance(model, nn.Module):
        raise UsageError(f"{spec}() returned a {type(model).__name__}, not an nn.Module")
    return model


def _check_inputs_fit(model: nn.Module, inputs: list[torch.Tensor]) -> None:
    """One forward pass, so that inputs of the wrong size are an argument error rather than a traceback."""
    try:
        with torch.no_grad():
            model(*inputs)
    except Exception as error:  # the model's own error message says what it expected
        sizes = " ".join(",".join(map(str, x.shape)) for x in inputs)
        raise UsageError(f"the model fails on --input-size {sizes}: {_brief(error)}") from None


def _report(args: argparse.Namespace) -> int:
    model = load_object(args.model).to(args.dtype)
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(*size, generator=generator).to(args.dtype) for size in args.input_size]
    _check_inputs_fit(model, inputs)
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
    """``--input-size``: non-negative integers separated by commas, ``x`` or spaces."""
    try:
        size = tuple(int(s) for s in re.split(r"[,x ]+", text.strip()) if s)
    except ValueError:
        size = ()
    if not size or any(s < 0 for s in size):
        raise argparse.ArgumentTypeError(f"an input size is non-negative ints like 8,64 or 8x64, got {text!r}")
    return size


def _positive_int(text: str) -> int:
    """``--threads``: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


#: the dtypes ``--dtype`` accepts: those a model's floating-point parameters and inputs can take on the CPU
DTYPES = {"float16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
          "float": torch.float32, "float64": torch.float64, "double": torch.float64}


def _float_dtype(text: str) -> torch.dtype:
    """``--dtype``: one of :data:`DTYPES`, with or without ``torch.``."""
    name = text.removeprefix("torch.")
    if name not in DTYPES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(DTYPES)}, got {text!r}")
    return DTYPES[name]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="structlin", description="structured linear layers for PyTorch")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{demo,report,bench}")

    demo = commands.add_parser("demo", help="train a dense MLP on digits, swap its layers for each kind, compare")
    demo.add_argument("--quick", action="store_true", help="a few epochs only (a smoke test, under a minute)")
    demo.add_argument("--out", default="structlin-demo", help="folder for demo.json and demo.png")
    demo.add_argument("--threads", type=_positive_int, default=1, help="torch threads (default 1)")
    demo.add_argument("--only", default=None, help="comma-separated variant labels or kinds to run")
    demo.set_defaults(run=_demo, parser=demo)

    report = commands.add_parser("report", help="parameter/FLOP table of an importable model")
    report.add_argument("model", help="MODULE:ATTR naming an nn.Module, or a class/function that builds one")
    report.add_argument("--input-size", type=_input_size, action="append", required=True,
                        help="shape of one example input, e.g. 8,64; repeat for several inputs")
    report.add_argument("--dtype", type=_float_dtype, default=torch.float32, metavar="DTYPE",
                        help=f"of the model and its inputs: {', '.join(DTYPES)} (default float32)")
    report.add_argument("--no-backward", action="store_true", help="count the forward pass only")
    report.set_defaults(run=_report, parser=report)

    bench = commands.add_parser("bench", help="run benchmarks/ and plot time vs N per benchmark family")
    bench.add_argument("--quick", action="store_true", help="sizes 64,256 and one round each (a smoke test)")
    bench.add_argument("--out", default="docs/figures", help="folder for the PNGs and bench.json")
    bench.add_argument("--benchmarks", default=None, help="the benchmarks folder (default ./benchmarks)")
    bench.add_argument("--sizes", default=None, help="comma-separated N (default 256,1024,4096,16384)")
    bench.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: extra pytest arguments")
    bench.set_defaults(run=_bench, parser=bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` (default ``sys.argv[1:]``) names; bad arguments exit with code 2 and a message."""
    _current_directory_last()
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UsageError as error:
        args.parser.error(str(error))


if __name__ == "__main__":
    sys.exit(main())

"""The ``structlin`` command (also ``python -m structlin``): ``demo``, ``report`` and ``bench``.

    structlin demo [--quick] [--out structlin-demo] [--threads 1] [--only acdc-8,lowrank-16]
    structlin report MODULE:ATTR --input-size 8,64 [--input-size …] [--kwargs in_features=64,out_features=32]
                     [--dtype float32] [--no-backward] [--max-depth 2] [--unit auto] [--macs]
    structlin bench [--quick] [--out structlin-bench] [--benchmarks benchmarks] [-- extra pytest arguments]
"""

from __future__ import annotations

import argparse
import ast
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
from .report import SCALES


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


def parse_kwargs(text: str) -> dict:
    """``--kwargs``: keyword arguments written as in a Python call, ``in_features=64, out_features=32,
    kernel_size=(3, 3), mode='bilinear'``; each value a Python literal (numbers, strings in quotes, tuples, lists,
    dicts, ``True``, ``False``, ``None``), read with :func:`ast.literal_eval`, never executed."""
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except SyntaxError:
        call = None
    if not isinstance(call, ast.Call) or call.args or not call.keywords or any(k.arg is None for k in call.keywords):
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE pairs separated by commas, e.g. in_features=64,out_features=32, got {text!r}")
    kwargs = {}
    for keyword in call.keywords:
        try:
            kwargs[keyword.arg] = ast.literal_eval(keyword.value)
        except (ValueError, TypeError):
            source = ast.get_source_segment(f"f({text})", keyword.value)
            raise argparse.ArgumentTypeError(
                f"the value of {keyword.arg} is not a Python literal: {source!r} (write strings in quotes, "
                f"e.g. {keyword.arg}='{source}')") from None
    return kwargs


def _merge_kwargs(groups: list[dict] | None) -> dict:
    """The ``--kwargs`` options together; a name given twice is an error."""
    merged: dict = {}
    for group in groups or []:
        for name, value in group.items():
            if name in merged:
                raise UsageError(f"--kwargs gives {name} twice")
            merged[name] = value
    return merged


def load_object(spec: str, kwargs: dict | None = None) -> nn.Module:
    """``"package.module:attr"`` → the ``nn.Module`` it names; a class or function there is called with
    ``kwargs`` (none by default) to build one. The current directory is importable, after the installed modules
    (a stray ``sympy.py`` there does not replace sympy). Raises :class:`UsageError` for a spec that names no
    model or arguments it does not take."""
    kwargs = kwargs or {}
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
        if kwargs:
            raise UsageError(f"{spec} is already an nn.Module: --kwargs is for a class or function that builds one")
        return obj
    if not callable(obj):
        raise UsageError(f"{spec} is a {type(obj).__name__}, not an nn.Module (or something that builds one)")
    missing = [name for name in _missing_arguments(obj) if name not in kwargs]
    if missing:
        given = f"with {', '.join(kwargs)}" if kwargs else "with none"
        raise UsageError(f"{spec} needs arguments ({', '.join(missing)}) and is called {given}: pass them with "
                         f"--kwargs, e.g. --kwargs {','.join(f'{name}=...' for name in missing)}")
    try:
        model = obj(**kwargs)
    except Exception as error:  # the constructor's own message says what it expected
        arguments = ", ".join(f"{name}={value!r}" for name, value in kwargs.items())
        raise UsageError(f"{spec}({arguments}) failed: {_brief(error)}") from None
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
    model = load_object(args.model, _merge_kwargs(args.kwargs)).to(args.dtype)
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(*size, generator=generator).to(args.dtype) for size in args.input_size]
    _check_inputs_fit(model, inputs)
    print(structlin.report(model, *inputs, backward=not args.no_backward, max_depth=args.max_depth,
                           unit="macs" if args.macs else "flops", scale=args.unit))
    return 0


# ----------------------------------------------------------------------------------------------------- bench


#: where ``structlin bench`` writes when ``--out`` is not given, relative to the current directory
BENCH_OUT = "structlin-bench"


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
                   f"--sizes={sizes}", "--benchmark-only", f"--benchmark-json={json_path}",
                   f"--benchmark-storage=file://{Path(tmp) / 'storage'}"]
        if args.quick:
            command += ["--benchmark-min-rounds=1", "--benchmark-max-time=0.001", "--benchmark-warmup=off"]
        command += extra
        print("running:", " ".join(command), flush=True)
        code = subprocess.call(command, cwd=benchmarks.parent, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
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


def _depth(text: str) -> int:
    """``--max-depth``: an integer of at least 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


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
    report.add_argument("--kwargs", type=parse_kwargs, action="append", metavar="NAME=VALUE,…",
                        help="keyword arguments for the class or function that builds the model, as in a Python "
                             "call: in_features=64,out_features=32 or kernel_size=(3,3),mode='bilinear' (values are "
                             "Python literals; strings in quotes); may be repeated")
    report.add_argument("--no-backward", action="store_true",
                        help="count the forward pass only (the table then has no backward column)")
    report.add_argument("--max-depth", type=_depth, default=None, metavar="N",
                        help="show modules at most N levels deep (0: the whole model only; default: all)")
    report.add_argument("--unit", choices=SCALES, default="auto",
                        help="how counts are written: auto (a prefix per number, 4.63M; the default), raw (every "
                             "digit), or every count in K, M, G or T (bytes in KiB, MiB, …)")
    report.add_argument("--macs", action="store_true", help="multiply-accumulates (FLOPs / 2) instead of FLOPs")
    report.set_defaults(run=_report, parser=report)

    bench = commands.add_parser("bench", help="run benchmarks/ and plot time vs N per benchmark family")
    bench.add_argument("--quick", action="store_true", help="sizes 64,256 and one round each (a smoke test)")
    bench.add_argument("--out", default=BENCH_OUT,
                        help=f"folder for the PNGs and bench.json, the only place written (default ./{BENCH_OUT} in "
                             "the current directory; a checkout's figures are docs/figures)")
    bench.add_argument("--benchmarks", default=None,
                       help="the benchmarks folder (default ./benchmarks, else the one of the structlin checkout "
                            "this command runs from)")
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

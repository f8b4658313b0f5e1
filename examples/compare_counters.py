"""What generic FLOP counters report for structured layers, beside ``structlin.report``.

The model: a 1024×1024 ``nn.Linear``, an ACDC layer written with ``torch_dct``, a spectral (rfft) layer and two
Hadamard layers (structlin's ``fwht``), and structlin's own ACDC layer. Each counter that is installed runs on
each layer alone (batch 64), and on the Linear with a ``(4, 16, 1024)`` input too (the same 64 rows); ptflops
makes its own input, ``(1, 64, 1024)``. Counters that are not installed are
skipped. Prints a markdown table (forward counts as each tool reports them) and, with ``--out``, writes JSON.

    python examples/compare_counters.py [--out results.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import warnings

import torch
# imported before any counter runs: its first import reads torch functions that some counters (ptflops) replace
# while they count, and would keep the replacements
import torch._dynamo  # noqa: F401
from torch import nn

import structlin
from structlin.transforms import fwht

N, BATCH = 1024, 64


class DctACDC(nn.Module):
    """One ACDC block ``x ↦ C⁻¹ diag(D) C diag(A) x + b`` with ``torch_dct``'s DCT (FFT-based)."""

    def __init__(self, n):
        super().__init__()
        self.A, self.D, self.bias = nn.Parameter(torch.ones(n)), nn.Parameter(torch.ones(n)), nn.Parameter(torch.zeros(n))

    def forward(self, x):
        import torch_dct

        return torch_dct.idct(self.D * torch_dct.dct(self.A * x, norm="ortho"), norm="ortho") + self.bias


class Spectral(nn.Module):
    """A learned filter applied in the frequency domain: ``irfft(rfft(x) ⊙ w)``."""

    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n // 2 + 1, dtype=torch.complex64))
        self.n = n

    def forward(self, x):
        return torch.fft.irfft(torch.fft.rfft(x) * self.weight, n=self.n)


class Hadamard(nn.Module):
    """A learned diagonal after a normalized Walsh–Hadamard transform: ``s ⊙ H x / √n``."""

    def __init__(self, n):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return self.scale * fwht(x)


def layers():
    torch.manual_seed(0)
    x = torch.randn(BATCH, N)
    return [
        ("Linear 1024² (2-D input)", nn.Linear(N, N), x),
        ("Linear 1024² (3-D input)", nn.Linear(N, N), x.view(4, 16, N)),
        ("ACDC (torch_dct)", DctACDC(N), x),
        ("rfft layer", Spectral(N), x),
        ("Hadamard layer ×2", nn.Sequential(Hadamard(N), Hadamard(N)), x),
        ("structlin.ACDC", structlin.ACDC(N, N, depth=1), x),
    ]


def _quiet(fn):
    """Run ``fn()`` with its printing and warnings captured; return (result, number of warnings)."""
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("always")
        logging.disable(logging.CRITICAL)
        try:
            return fn(), len(caught)
        finally:
            logging.disable(logging.NOTSET)


def fvcore_count(model, x):
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, x)
    total = analysis.total()
    unsupported = analysis.unsupported_ops()
    return total, "MACs" + (f"; skipped {sorted(unsupported)}" if unsupported else "")


def ptflops_count(backend):
    def count(model, x):
        from ptflops import get_model_complexity_info

        # ptflops makes its own input, a batch of one of shape (1, *input_res): give it the whole shape
        macs, _ = get_model_complexity_info(
            model, tuple(x.shape), as_strings=False, print_per_layer_stat=False, backend=backend
        )
        return macs, "MACs"

    return count


def thop_count(model, x):
    from thop import profile

    macs, _ = profile(model, inputs=(x,), verbose=False)
    return macs, "MACs"


def torchinfo_count(model, x):
    from torchinfo import summary

    return summary(model, input_data=x, verbose=0).total_mult_adds, "MACs"


def calflops_count(model, x):
    from calflops import calculate_flops

    flops, macs, _ = calculate_flops(model=model, args=[x], output_as_string=False, print_results=False,
                                     print_detailed=False)
    return flops, "FLOPs"


def deepspeed_count(model, x):
    from deepspeed.profiling.flops_profiler import get_model_profile

    flops, macs, _ = get_model_profile(model, args=[x], print_profile=False, as_string=False, warm_up=0)
    return flops, "FLOPs"


def flop_counter_mode_count(model, x):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops(), "FLOPs"


def structlin_count(model, x):
    return structlin.report(model, x, backward=False).total.forward_flops, "FLOPs"


def structlin_backward_count(model, x):
    return structlin.report(model, x).total.backward_flops, "FLOPs"


TOOLS = {
    "fvcore": fvcore_count,
    "ptflops (pytorch)": ptflops_count("pytorch"),
    "ptflops (aten)": ptflops_count("aten"),
    "thop": thop_count,
    "torchinfo": torchinfo_count,
    "calflops": calflops_count,
    "DeepSpeed": deepspeed_count,
    "FlopCounterMode": flop_counter_mode_count,
    "structlin.report": structlin_count,
    "structlin.report, backward": structlin_backward_count,
}


def _human(value):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.4g}{unit}"
    return f"{value:g}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    results = {}
    for tool, count in TOOLS.items():
        for name, model, x in layers():
            try:
                (value, unit), n_warnings = _quiet(lambda: count(model, x))
                results[(tool, name)] = {"value": float(value), "unit": unit, "warnings": n_warnings}
            except ImportError as error:
                results[(tool, name)] = {"error": f"not installed ({error.name})"}
            except Exception as error:  # a counter failing on a layer is a result too
                results[(tool, name)] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:80]}"}
    names = [name for name, _, _ in layers()]
    print("| tool | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for tool in TOOLS:
        cells = []
        for name in names:
            r = results[(tool, name)]
            if "error" in r:
                cells.append("not installed" if r["error"].startswith("not installed") else "fails: " + r["error"].split(":")[0])
            else:
                cells.append(f"{_human(r['value'])} {r['unit'].split(';')[0]}")
        print(f"| {tool} | " + " | ".join(cells) + " |")
    print()
    for (tool, name), r in results.items():
        notes = [r["unit"].partition("; ")[2]] if "; " in r.get("unit", "") else []
        notes += [f"{r['warnings']} Python warnings"] if r.get("warnings") else []
        notes += [r["error"]] if "error" in r else []
        if notes:
            print(f"- {tool}, {name}: {', '.join(notes)}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({f"{tool} | {name}": r for (tool, name), r in results.items()}, f, indent=1)


if __name__ == "__main__":
    main()

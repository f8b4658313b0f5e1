"""Speed of ACDC against ``nn.Linear`` of the same shape, FFTs of the same tensor, and a torch_dct cascade.

Groups (float32, batch 128 by default):

* ``acdc block forward N=…``: one block vs ``torch.fft.rfft`` followed by ``torch.fft.irfft`` (the reference);
* ``acdc block forward+backward N=…``: one block vs ``nn.Linear(N, N)``;
* ``acdc depth-12 forward+backward N=…``: a 12-block cascade vs ``nn.Linear(N, N)`` and vs the same cascade
  written with ``torch_dct.dct``/``idct`` and plain autograd (no permutations in either, for a like-for-like
  comparison of the blocks); also with permutations, and with permutations and ReLUs between blocks, and with
  biases after the diagonals (``diagonal_bias=True``).

As a script, the bars of the training-size issue: each layer alternates with ``nn.Linear`` of its shape step by
step (the order switching every round) and the figure is the median of the per-round ratios
``time(ACDC) / time(nn.Linear)``; ``--busy`` runs one extra CPU-bound process (a Python loop) meanwhile::

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \
      python benchmarks/bench_acdc.py --rounds 9 [--busy] [--paths]

``--paths`` also measures each configuration with ``path="fft"``, ``path="dense"`` and ``recompute=False``;
``--diagonal-bias`` with ``diagonal_bias=True`` (the authors' block), on its own and with ReLUs between blocks
(then the plain cascade with ReLUs is measured too, for the ratio of the two).
"""

import pytest
import torch
import torch_dct
from torch import nn

from structlin import ACDC

from steps import training_step


class TorchDctCascade(nn.Module):
    """The same blocks with torch_dct's DCT and autograd through it (the usual pure-PyTorch ACDC)."""

    def __init__(self, n, depth):
        super().__init__()
        self.A = nn.Parameter(torch.randn(depth, n) * 0.01 + 1)
        self.D = nn.Parameter(torch.randn(depth, n) * 0.01 + 1)
        self.bias = nn.Parameter(torch.zeros(n))

    def forward(self, x):
        for a, d in zip(self.A, self.D):
            x = torch_dct.idct(d * torch_dct.dct(a * x, norm="ortho"), norm="ortho")
        return x + self.bias


@pytest.mark.parametrize("impl", ["structlin", "torch.fft.rfft+irfft"])
def test_acdc_block_forward(timed, impl, x, n):
    if impl == "structlin":
        layer = ACDC(n, n, depth=1).to(x.device)
        with torch.no_grad():
            timed(f"acdc block forward N={n}", lambda: layer(x))
    else:
        timed(f"acdc block forward N={n}", lambda: torch.fft.irfft(torch.fft.rfft(x), n=n))


@pytest.mark.parametrize("impl", ["structlin", "nn.Linear"])
def test_acdc_block_forward_backward(timed, impl, x, n):
    module = (ACDC(n, n, depth=1) if impl == "structlin" else nn.Linear(n, n)).to(x.device)
    x.requires_grad_(True)
    timed(f"acdc block forward+backward N={n}", training_step(module, x))


@pytest.mark.parametrize("impl", ["structlin", "structlin-permuted", "structlin-relu", "structlin-diagonal-bias",
                                  "torch_dct-autograd", "nn.Linear"])
def test_acdc_depth12_forward_backward(timed, impl, x, n):
    modules = {
        "structlin": lambda: ACDC(n, n, depth=12, permute=False),
        "structlin-permuted": lambda: ACDC(n, n, depth=12, permute=True),
        "structlin-relu": lambda: ACDC(n, n, depth=12, permute=True, activation="relu"),
        "structlin-diagonal-bias": lambda: ACDC(n, n, depth=12, permute=True, activation="relu", diagonal_bias=True),
        "torch_dct-autograd": lambda: TorchDctCascade(n, 12),
        "nn.Linear": lambda: nn.Linear(n, n),
    }
    module = modules[impl]().to(x.device)
    x.requires_grad_(True)
    timed(f"acdc depth-12 forward+backward N={n}", training_step(module, x))


#: the bars (N, depth, rows, the most time(ACDC) / time(nn.Linear) may be), float32, forward+backward
BARS = [
    (1024, 4, 2048, 0.5),
    (4096, 12, 2048, 1 / 3),
    (4096, 12, 128, 0.4),
    (128, 4, 2048, 1.5),
    (256, 4, 2048, 1.5),
    (512, 4, 2048, 1.5),
]
#: the variants ``--paths`` adds to the default layer
VARIANTS = {"fft": {"path": "fft"}, "dense": {"path": "dense"}, "kept-inputs": {"recompute": False}}
#: the variants ``--diagonal-bias`` adds
DIAGONAL_BIAS = {"diagonal-bias": {"diagonal_bias": True}, "relu": {"activation": "relu"},
                 "diagonal-bias-relu": {"diagonal_bias": True, "activation": "relu"}}


def alternated(n: int, depth: int, rows: int, rounds: int, variants: dict) -> dict:
    """Median per-round ratios to ``nn.Linear(n, n)`` (and median times) of ``ACDC(n, n, depth=depth, **options)``
    for each entry of ``variants``, every step alternating with the reference's."""
    import statistics
    import time

    torch.manual_seed(0)
    x = torch.randn(rows, n, requires_grad=True)
    reference = training_step(nn.Linear(n, n), x)
    steps = {name: training_step(ACDC(n, n, depth=depth, **options), x) for name, options in variants.items()}
    for step in (reference, *steps.values()):
        step()
    times = {name: [] for name in ("nn.Linear", *steps)}
    for r in range(rounds):
        order = list(steps.items())
        order = order + [("nn.Linear", reference)] if r % 2 else [("nn.Linear", reference)] + order
        for name, step in order:
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    result = {"linear_ms": 1e3 * statistics.median(times["nn.Linear"])}
    for name in steps:
        result[name] = {"ratio": statistics.median(a / b for a, b in zip(times[name], times["nn.Linear"])),
                        "ms": 1e3 * statistics.median(times[name])}
    return result


def main() -> None:
    import argparse
    import json
    import subprocess
    import sys

    parser = argparse.ArgumentParser(description="the training-size bars: ACDC against nn.Linear, alternating")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--busy", action="store_true", help="run one CPU-bound process meanwhile")
    parser.add_argument("--paths", action="store_true", help="also path='fft', path='dense' and recompute=False")
    parser.add_argument("--diagonal-bias", action="store_true", help="also diagonal_bias=True, without and with ReLUs")
    parser.add_argument("--only", default=None, help="comma-separated N:depth:rows to measure (default: all bars)")
    args = parser.parse_args()
    bars = BARS if args.only is None else [
        (n, d, r, next((b for bn, bd, br, b in BARS if (bn, bd, br) == (n, d, r)), float("nan")))
        for n, d, r in (map(int, spec.split(":")) for spec in args.only.split(","))]
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    try:
        variants = {"default": {}, **(VARIANTS if args.paths else {}), **(DIAGONAL_BIAS if args.diagonal_bias else {})}
        for n, depth, rows, bar in bars:
            result = alternated(n, depth, rows, args.rounds, variants)
            met = "met" if result["default"]["ratio"] <= bar else "MISSED"
            print(json.dumps({"n": n, "depth": depth, "rows": rows, "bar": round(bar, 3), "busy": args.busy,
                              "met": met, **result}), flush=True)
    finally:
        if busy is not None:
            busy.kill()


if __name__ == "__main__":
    main()

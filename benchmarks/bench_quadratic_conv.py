"""Speed of the quadratic convolutions against the ``nn.Conv2d`` they replace (float32, forward+backward).

Group ``quadratic conv forward+backward C=…`` (``C → C`` channels, 3×3 kernel, padding 1, on ``(B, C, S, S)``):

* ``nn.Conv2d``: the convolution a quadratic one replaces;
* ``nn.Conv2d-3C``: ``nn.Conv2d(C, 3C, 3)``, the same convolution as a fresh xu layer runs (its reference);
* ``xu``: ``QuadraticConv2d(C, C, 3, form="xu")``: its three parts as one convolution to ``3C`` channels, then
  ``a ⊙ b + c``;
* ``xu-from_conv``: the same after ``from_conv`` (the first-order part apart: two convolutions);
* ``fan``: ``form="fan"`` (one convolution of ``x`` to ``2C``, one of ``x ⊙ x`` to ``C``);
* ``lowrank``, ``lowrank-atrous``: ``form="lowrank", rank=C/8`` (``[W; U; V]`` fused), and with
  ``quadratic_dilation=2`` (``W`` apart from ``[U; V]``).

For the issue's ratios run this file as a script: it alternates the two layers of each pair step by step and
reports the median of the per-round ratios (one process, the same input)::

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \\
        python benchmarks/bench_quadratic_conv.py --channels 64 --size 16 --batch 16 --rounds 21
"""

import pytest
import torch
from torch import nn

from structlin import QuadraticConv2d

from steps import alternated_pair, training_step

IMPLS = {
    "nn.Conv2d": lambda c: nn.Conv2d(c, c, 3, padding=1),
    "nn.Conv2d-3C": lambda c: nn.Conv2d(c, 3 * c, 3, padding=1),
    "xu": lambda c: QuadraticConv2d(c, c, 3, padding=1, form="xu"),
    "xu-from_conv": lambda c: QuadraticConv2d.from_conv(nn.Conv2d(c, c, 3, padding=1), form="xu"),
    "fan": lambda c: QuadraticConv2d(c, c, 3, padding=1, form="fan"),
    "lowrank": lambda c: QuadraticConv2d(c, c, 3, padding=1, form="lowrank", rank=max(1, c // 8)),
    "lowrank-atrous": lambda c: QuadraticConv2d(c, c, 3, padding=1, form="lowrank", rank=max(1, c // 8),
                                                quadratic_dilation=2),
}
#: (layer, reference, bar): the issue's bar and the cost of each form against the conv it replaces
PAIRS = [("xu", "nn.Conv2d-3C", "<= 1.2"), ("xu", "nn.Conv2d", None), ("xu-from_conv", "nn.Conv2d", None),
         ("fan", "nn.Conv2d", None), ("lowrank", "nn.Conv2d", None), ("lowrank-atrous", "nn.Conv2d", None)]


@pytest.fixture
def shape(request):
    """``(batch, channels, size)``: a small one when the suite runs once as a smoke test."""
    if request.config.getoption("benchmark_disable", False):
        return 2, 8, 8
    return 16, 64, 16


@pytest.mark.parametrize("impl", list(IMPLS))
def test_quadratic_conv_forward_backward(timed, impl, shape, bench_device):
    batch, channels, size = shape
    torch.manual_seed(0)
    module = IMPLS[impl](channels).to(bench_device)
    x = torch.randn(batch, channels, size, size, device=bench_device, requires_grad=True)
    timed(f"quadratic conv forward+backward C={channels}", training_step(module, x))


def interleaved_ratios(channels: int, size: int, batch: int, rounds: int) -> list[dict]:
    """Median times and the median per-round ratio of each pair in :data:`PAIRS`, the pair's steps alternating."""
    torch.manual_seed(0)
    x = torch.randn(batch, channels, size, size, requires_grad=True)
    results = []
    for layer, reference, bar in PAIRS:
        steps = [training_step(IMPLS[name](channels), x) for name in (layer, reference)]
        results.append({"layer": layer, "reference": reference, "bar": bar,
                        **alternated_pair(*steps, rounds, warmup=2)})
        del steps
    return results


if __name__ == "__main__":
    import argparse
    import json
    import os

    parser = argparse.ArgumentParser(description="quadratic convolutions against nn.Conv2d, alternating steps")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc = {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    print(json.dumps({"channels": args.channels, "size": args.size, "batch": args.batch, "rounds": args.rounds,
                      "threads": torch.get_num_threads(), "malloc": malloc,
                      "results": interleaved_ratios(args.channels, args.size, args.batch, args.rounds)}, indent=2))

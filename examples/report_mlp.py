"""The worked example of ``docs/report.md``: a transformer-style MLP block before and after replacing its two
``nn.Linear`` layers with ACDC, its report and the comparison.

    python examples/report_mlp.py [--d 512] [--depth 4]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import structlin


class MLPBlock(nn.Module):
    """``x + fc2(gelu(fc1(x)))`` with ``fc1: d → 4d`` and ``fc2: 4d → d``, as in a transformer layer."""

    def __init__(self, fc1: nn.Module, fc2: nn.Module):
        super().__init__()
        self.fc1, self.act, self.fc2 = fc1, nn.GELU(), fc2

    def forward(self, x):
        return x + self.fc2(self.act(self.fc1(x)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=512, help="model width")
    parser.add_argument("--depth", type=int, default=4, help="ACDC blocks per layer")
    args = parser.parse_args()
    torch.manual_seed(0)
    d = args.d
    dense = MLPBlock(nn.Linear(d, 4 * d), nn.Linear(4 * d, d))
    swapped = MLPBlock(structlin.ACDC(d, 4 * d, depth=args.depth), structlin.ACDC(4 * d, d, depth=args.depth))
    x = torch.randn(8, 128, d)  # 8 sequences of 128 tokens

    before = structlin.report(dense, x)
    after = structlin.report(swapped, x)
    print(before, end="\n\n")
    print(after, end="\n\n")
    print(before.compare(after), end="\n\n")
    print("by operator, after:")
    for op, (forward, backward) in after.by_operator().items():
        print(f"  {op:34s} {forward:>14,d} {backward:>14,d}")


if __name__ == "__main__":
    main()

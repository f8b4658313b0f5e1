"""Swap the dense layers of a small transformer-style model and print what changed.

    python examples/swap_report.py [--kind acdc] [--option depth=4] [--quick] [--verbose]

Prints the :class:`structlin.SwapResult` (each replaced layer, how it started, its relative output error on the
calibration batch, parameters before/after) and, when :func:`structlin.report` is available, the FLOP/parameter
report of the model before and after.
"""

from __future__ import annotations

import argparse
import copy
import json

import torch
from torch import nn

import structlin


class Block(nn.Module):
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))

    def forward(self, x):
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        x = x + self.proj(nn.functional.scaled_dot_product_attention(q, k, v))
        return x + self.mlp(self.norm2(x))


def parse_option(text: str):
    name, _, value = text.partition("=")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="acdc", help=f"one of {structlin.available_layers()}")
    parser.add_argument("--option", action="append", default=[], type=parse_option, help="layer option NAME=VALUE")
    parser.add_argument("--preserve", default="fit", choices=["auto", "fit", "none"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="print the fits' progress to stderr")
    args = parser.parse_args()
    options = dict(args.option) or ({"depth": 4} if args.kind == "acdc" else {})

    torch.manual_seed(0)
    torch.set_num_threads(1)  # small layers: one thread is as fast and steadier
    d = 32 if args.quick else 128
    model = nn.Sequential(nn.Linear(16, d), Block(d, 4 * d), Block(d, 4 * d), nn.Linear(d, 10))
    x = torch.randn(8, 12, 16)
    before = copy.deepcopy(model)

    # swap the MLPs of both blocks only (by name, as PEFT's target_modules: any module named "….mlp.0" or
    # "….mlp.2"); the calibration batch is what each layer is fitted on and its error measured on
    result = structlin.swap(model, args.kind, include=["mlp.0", "mlp.2"], preserve=args.preserve, calibration=x,
                            fit_iterations=50 if args.quick else 500, verbose=args.verbose, **options)
    print(result)
    with torch.no_grad():
        change = (model(x) - before(x)).norm() / before(x).norm()
    print(f"\nrelative change of the model's output on the calibration batch: {float(change):.3e}")

    report = getattr(structlin, "report", None)
    if report is None:
        print("(structlin.report is not available in this installation: no FLOP report)")
        return
    old, new = report(before, x), report(model, x)
    print("\nbefore:\n" + str(old))
    print("\nafter:\n" + str(new))
    print("\nafter vs before:\n" + str(new.compare(old)))


if __name__ == "__main__":
    main()

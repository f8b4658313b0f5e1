"""Convert a trained MLP to quadratic neurons (QuadraNet V2 style) and fine-tune only the quadratic term.

    python examples/quadranet_v2.py [--rank 8] [--quick]

QuadraNet V2 keeps a trained network's linear layers as the linear part of quadratic neurons,
``y = W x + b + (quadratic term)``, with the quadratic term starting at exactly zero, and trains only the new
term. Here: train a dense MLP on digits, ``structlin.swap(model, "quadratic", form="lowrank", rank=r)`` (an exact
start: the swapped model computes what the dense one did), freeze the parameters that hold the dense layers'
weights and biases, and fine-tune the rest.
"""

from __future__ import annotations

import argparse
import sys

import torch
import structlin
from structlin.demo import Settings, accuracy, count_params, dense_mlp, load_data, train


def freeze_copied_linear_terms(result: structlin.SwapResult) -> tuple[int, int]:
    """Freeze each quadratic layer's parameters that equal its original Linear's weight or bias (the linear
    term ``from_linear`` copied); returns (frozen, trainable) parameter counts over the swapped layers."""
    frozen = trainable = 0
    for entry in result:
        originals = [t for t in (entry.linear.weight, entry.linear.bias) if t is not None]
        for param in entry.layer.parameters():
            copied = any(param.shape == t.shape and torch.equal(param, t) for t in originals)
            param.requires_grad_(not copied)
            frozen, trainable = (frozen + param.numel(), trainable) if copied else (frozen, trainable + param.numel())
    return frozen, trainable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    settings = Settings.quick() if args.quick else Settings()
    torch.manual_seed(0)
    torch.set_num_threads(1)

    x_train, y_train, x_test, y_test = load_data()
    model = dense_mlp(x_train.shape[1], 10)
    train(model, x_train, y_train, settings, settings.epochs, "train dense")
    dense_accuracy = accuracy(model, x_test, y_test)
    print(f"dense:     accuracy {dense_accuracy:.3f}, {count_params(model):,} parameters")

    result = structlin.swap(model, "quadratic", min_features=64, form="lowrank", rank=args.rank)
    print(result)
    print(f"quadratic: accuracy {accuracy(model, x_test, y_test):.3f} at the exact start")
    frozen, trainable = freeze_copied_linear_terms(result)
    if frozen == 0 or trainable == 0:
        sys.exit(f"could not separate the linear term (frozen {frozen}, trainable {trainable} parameters)")
    model[-1].requires_grad_(False)  # the dense head stays as trained too: only the quadratic terms learn
    print(f"fine-tuning {trainable:,} quadratic-term parameters; {frozen:,} linear-term parameters frozen")

    train(model, x_train, y_train, settings, settings.finetune_epochs, "fine-tune quadratic term")
    print(f"quadratic: accuracy {accuracy(model, x_test, y_test):.3f} after fine-tuning the quadratic term")


if __name__ == "__main__":
    main()

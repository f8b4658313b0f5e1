"""Train a dense MLP on scikit-learn's digits, swap its hidden layers, and fine-tune the swapped model.

    python examples/swap_finetune.py [--kind acdc] [--quick] [--verbose]

The data, model and training recipe are the ``structlin demo`` ones (:mod:`structlin.demo`); this script shows
the three steps in plain code: train dense → :func:`structlin.swap` with ``preserve="fit"`` → fine-tune. For ACDC and
Fastfood the fit is only a start (their layers cannot hold a trained dense matrix); fine-tuning recovers the
accuracy.
"""

from __future__ import annotations

import argparse

import torch

import structlin
from structlin.demo import Settings, accuracy, count_params, dense_mlp, load_data, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="acdc")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="print the fits' progress to stderr")
    args = parser.parse_args()
    settings = Settings.quick() if args.quick else Settings()
    torch.manual_seed(0)
    torch.set_num_threads(1)

    x_train, y_train, x_test, y_test = load_data()
    model = dense_mlp(x_train.shape[1], 10)
    train(model, x_train, y_train, settings, settings.epochs, "train dense")
    print(f"dense:      accuracy {accuracy(model, x_test, y_test):.3f}, {count_params(model):,} parameters")

    options = {"depth": 8} if args.kind == "acdc" else {}
    result = structlin.swap(model, args.kind, min_features=64, preserve="fit",
                            fit_iterations=settings.fit_iterations, verbose=args.verbose, **options)
    print(result)
    print(f"swapped:    accuracy {accuracy(model, x_test, y_test):.3f} before fine-tuning")

    train(model, x_train, y_train, settings, settings.finetune_epochs, "fine-tune")
    print(f"fine-tuned: accuracy {accuracy(model, x_test, y_test):.3f}, {count_params(model):,} parameters")


if __name__ == "__main__":
    main()

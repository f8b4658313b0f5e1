"""Train small MLPs whose hidden-to-hidden layer is dense, low-rank or an ACDC cascade.

Models (all with ReLU after each hidden layer)::

    input → Linear(in, 256) → ReLU → H → ReLU → Linear(256, 10)

where the hidden-to-hidden map ``H`` is one of

- ``dense``:      ``nn.Linear(256, 256)``
- ``acdc-K``:     ``structlin.ACDC(256, 256, depth=K, activation="relu", init="paper")``: ReLUs between the
  blocks (``--acdc-init`` changes the init of these rows)
- ``acdclin-K``:  ``structlin.ACDC(256, 256, depth=K, activation=None, init="paper")``: a linear cascade
- either ACDC kind with ``@NAME`` uses init ``NAME``, e.g. ``acdclin-12@variance-preserving``
- ``lowrank-r``:  ``nn.Linear(256, r, bias=False)`` then ``nn.Linear(r, 256)`` (a rank-r factorization with
  about as many parameters as ``acdc-r``)
- ``none``:       no hidden-to-hidden layer at all (``input → 256 → 10``), as a reference for how much the
  second hidden layer matters on the task.

Datasets: scikit-learn's ``load_digits`` (1797 8×8 images, 64 features, 10 classes; standardized, stratified
80/20 split) and, when the ``mnist1d`` package is installed, MNIST-1D generated locally with
``mnist1d.data.make_dataset`` (5000 sequences of 40 features, its own 80/20 split; nothing is downloaded, and
this script blocks sockets while generating to make sure of it).

Every model is trained with the same recipe: Adam (lr 1e-3), batch 64, a fixed number of epochs, cross-entropy
loss; the reported accuracy is the test accuracy after the last epoch (no early stopping, no model selection
on the test set), mean ± std over seeds.

    python examples/acdc_mlp.py                  # full run, writes docs/figures/acdc_mlp.{json,png}
    python examples/acdc_mlp.py --quick --out /tmp/acdc_mlp
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import socket
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import structlin

HIDDEN = 256
MODELS = ["none", "dense", "lowrank-12", "acdc-1", "acdc-4", "acdc-12", "acdc-12@variance-preserving",
          "acdclin-1@variance-preserving", "acdclin-4@variance-preserving", "acdclin-12@variance-preserving"]
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "figures"


# --------------------------------------------------------------------------------------------------- data


def standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature standardization with the training set's statistics (constant features are left at 0)."""
    mean = x_train.mean(0)
    std = x_train.std(0)
    std[std == 0] = 1.0
    return (x_train - mean) / std, (x_test - mean) / std


def load_digits_split(seed: int = 0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    x_train, x_test = standardize(x_train, x_test)
    return x_train, y_train, x_test, y_test


@contextlib.contextmanager
def no_network():
    """Make any attempt to open a network connection raise (used around dataset generation)."""

    def refuse(*args, **kwargs):
        raise RuntimeError("network access attempted while generating a dataset")

    saved = socket.socket.connect, socket.socket.connect_ex, socket.create_connection
    socket.socket.connect, socket.socket.connect_ex, socket.create_connection = refuse, refuse, refuse
    try:
        yield
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.create_connection = saved


def load_mnist1d_split(num_samples: int = 5000):
    """MNIST-1D generated locally (``make_dataset``, never ``get_dataset``, which may download a pickle)."""
    state = np.random.get_state()  # make_dataset reseeds numpy's global RNG; leave it as we found it
    with no_network():
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples = num_samples
        data = make_dataset(args)
    np.random.set_state(state)
    x_train, x_test = standardize(data["x"], data["x_test"])
    return x_train, data["y"], x_test, data["y_test"]


def available_datasets() -> list[str]:
    names = []
    try:
        import sklearn  # noqa: F401

        names.append("digits")
    except ImportError:
        print("scikit-learn is not installed: skipping load_digits", file=sys.stderr)
    try:
        import mnist1d  # noqa: F401

        names.append("mnist1d")
    except ImportError:
        print("mnist1d is not installed: skipping MNIST-1D", file=sys.stderr)
    return names


# ------------------------------------------------------------------------------------------------- models


def hidden_layer(kind: str, acdc_init: str = "paper") -> nn.Module | None:
    """The hidden-to-hidden map for a model name: ``dense``, ``acdc-K[@init]``, ``acdclin-K[@init]``,
    ``lowrank-R`` or ``none``."""
    if kind == "none":
        return None
    if kind == "dense":
        return nn.Linear(HIDDEN, HIDDEN)
    name, _, value = kind.partition("-")
    if name in ("acdc", "acdclin"):
        value, _, init = value.partition("@")
        activation = "relu" if name == "acdc" else None
        return structlin.ACDC(HIDDEN, HIDDEN, depth=int(value), activation=activation, init=init or acdc_init)
    if name == "lowrank":
        return nn.Sequential(nn.Linear(HIDDEN, int(value), bias=False), nn.Linear(int(value), HIDDEN))
    raise ValueError(f"unknown model {kind!r}")


def make_model(kind: str, in_features: int, classes: int, acdc_init: str = "paper") -> tuple[nn.Module, int]:
    """The MLP and the parameter count of its hidden-to-hidden layer."""
    middle = hidden_layer(kind, acdc_init)
    layers: list[nn.Module] = [nn.Linear(in_features, HIDDEN), nn.ReLU()]
    if middle is not None:
        layers += [middle, nn.ReLU()]
    layers.append(nn.Linear(HIDDEN, classes))
    replaced = sum(p.numel() for p in middle.parameters()) if middle is not None else 0
    return nn.Sequential(*layers), replaced


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------- training


def train_one(kind: str, data, *, seed: int, epochs: int, batch_size: int, lr: float, acdc_init: str) -> dict:
    x_train, y_train, x_test, y_test = (torch.as_tensor(a) for a in data)
    x_train, x_test = x_train.float(), x_test.float()
    y_train, y_test = y_train.long(), y_test.long()
    classes = int(max(y_train.max(), y_test.max())) + 1

    torch.manual_seed(seed)  # the model's init, ACDC's permutations and the batch order all follow from it
    model, replaced = make_model(kind, x_train.shape[1], classes, acdc_init)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    n = x_train.shape[0]
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    train_seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        test_acc = (model(x_test).argmax(1) == y_test).float().mean().item()
        train_acc = (model(x_train).argmax(1) == y_train).float().mean().item()
        final_loss = loss_fn(model(x_train), y_train).item()
    return {
        "seed": seed,
        "test_acc": test_acc,
        "train_acc": train_acc,
        "train_loss": final_loss,
        "train_seconds": train_seconds,
        "params": count_params(model),
        "replaced_params": replaced,
    }


def summarize(runs: list[dict]) -> dict:
    acc = np.array([r["test_acc"] for r in runs])
    secs = np.array([r["train_seconds"] for r in runs])
    return {
        "test_acc_mean": float(acc.mean()),
        "test_acc_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
        "train_acc_mean": float(np.mean([r["train_acc"] for r in runs])),
        "train_seconds_mean": float(secs.mean()),
        "params": runs[0]["params"],
        "replaced_params": runs[0]["replaced_params"],
    }


def format_table(results: dict) -> str:
    lines = []
    for dataset, models in results.items():
        lines.append(f"\n{dataset}")
        lines.append("| hidden-to-hidden | test accuracy | train accuracy | params (model) | params (layer) | train time / run |")
        lines.append("|---|---|---|---|---|---|")
        for kind, entry in models.items():
            s = entry["summary"]
            lines.append(
                f"| {kind} | {s['test_acc_mean']:.4f} ± {s['test_acc_std']:.4f} | {s['train_acc_mean']:.4f} | "
                f"{s['params']:,} | {s['replaced_params']:,} | {s['train_seconds_mean']:.1f} s |"
            )
    return "\n".join(lines)


def model_group(kind: str, default_init: str) -> str:
    """The legend group of a model name: ``dense``, ``lowrank``, ``none`` or an ACDC kind with its init."""
    name, _, rest = kind.partition("-")
    if name not in ("acdc", "acdclin"):
        return name
    init = rest.partition("@")[2] or default_init
    return f"ACDC, {'ReLU between blocks' if name == 'acdc' else 'linear'} ({init})"


def plot(results: dict, path: Path, default_init: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.0 * len(results), 4.5), squeeze=False)
    markers = {"dense": ("C0", "s"), "lowrank": ("C2", "^"), "none": ("C7", "x")}
    acdc_colors = iter(["C3", "C1", "C4", "C5"])
    for ax, (dataset, models) in zip(axes[0], results.items()):
        groups: dict[str, list[str]] = {}
        for kind in models:
            groups.setdefault(model_group(kind, default_init), []).append(kind)
        for group, kinds in groups.items():
            if group not in markers:
                markers[group] = (next(acdc_colors, "k"), "o")
            color, marker = markers[group]
            kinds = sorted(kinds, key=lambda k: models[k]["summary"]["params"])
            xs = [models[k]["summary"]["params"] for k in kinds]
            ys = [models[k]["summary"]["test_acc_mean"] for k in kinds]
            es = [models[k]["summary"]["test_acc_std"] for k in kinds]
            ax.errorbar(xs, ys, yerr=es, color=color, marker=marker, capsize=3, label=group,
                        linestyle="-" if group.startswith("ACDC") else "none")
            for k, x, y in zip(kinds, xs, ys):
                label = k.partition("@")[0] if group.startswith("ACDC") else k
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
        ax.set_xscale("log")
        ax.set_xlabel("parameters of the whole model")
        ax.set_ylabel("test accuracy (mean ± std over seeds)")
        ax.set_title(dataset)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 epochs, 1 seed, small data, few models")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for acdc_mlp.json and .png")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--datasets", nargs="+", default=None, help="digits and/or mnist1d (default: those installed)")
    parser.add_argument("--acdc-init", default="paper", help="init of the acdc-K rows without @init (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.epochs, args.seeds, args.models = 2, [0], ["dense", "acdc-2", "acdclin-2@variance-preserving"]

    datasets = args.datasets or available_datasets()
    if not datasets:
        raise SystemExit("no dataset available: install scikit-learn and/or mnist1d")
    loaders = {"digits": load_digits_split, "mnist1d": lambda: load_mnist1d_split(1000 if args.quick else 5000)}

    started = time.perf_counter()
    results: dict = {}
    for dataset in datasets:
        data = loaders[dataset]()
        print(f"{dataset}: {data[0].shape[0]} train, {data[2].shape[0]} test, {data[0].shape[1]} features", flush=True)
        results[dataset] = {}
        for kind in args.models:
            runs = [
                train_one(kind, data, seed=seed, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          acdc_init=args.acdc_init)
                for seed in args.seeds
            ]
            results[dataset][kind] = {"runs": runs, "summary": summarize(runs)}
            s = results[dataset][kind]["summary"]
            print(f"  {kind:>11}: test acc {s['test_acc_mean']:.4f} ± {s['test_acc_std']:.4f}, "
                  f"{s['params']:,} params, {s['train_seconds_mean']:.1f} s/run", flush=True)
    total = time.perf_counter() - started

    table = format_table(results)
    print(table)
    print(f"\ntotal time {total:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "config": {
            "hidden": HIDDEN, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "optimizer": "Adam", "seeds": args.seeds, "models": args.models, "quick": args.quick,
            "threads": args.threads, "acdc": {"acdc-K": "activation='relu'", "acdclin-K": "activation=None", "default_init": args.acdc_init,
                     "permute": True},
        },
        "environment": {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine()},
        "total_seconds": total,
        "results": results,
    }
    (args.out / "acdc_mlp.json").write_text(json.dumps(report, indent=2))
    plot(results, args.out / "acdc_mlp.png", args.acdc_init)
    print(f"wrote {args.out / 'acdc_mlp.json'} and {args.out / 'acdc_mlp.png'}")
    return report


if __name__ == "__main__":
    main()

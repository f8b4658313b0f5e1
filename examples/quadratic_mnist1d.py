"""Quadratic MLPs on MNIST-1D: dense against each quadratic form at equal parameter counts, ACDC branches at a
larger width, and fine-tuning a trained dense MLP after ``Quadratic.from_linear``.

Models: ``input(40) → L(40, H) → ReLU → L(H, H) → ReLU → Linear(H, 10)`` where both ``L`` are

- ``dense``: ``nn.Linear``;
- ``xu`` / ``fan`` / ``lowrank``: ``structlin.Quadratic(form=…, branch="dense", init="random")`` (``lowrank``
  with ``rank = H/4``);
- ``xu-acdc`` / ``fan-acdc`` / ``lowrank-acdc``: the same forms with ``branch="acdc", depth=4`` (random init).

Part 1 (``equal``): at each target size (the parameter count of the dense model with ``H`` in ``--dense-widths``)
every family gets the width whose model is closest to the target in parameters.
Part 2 (``acdc``): ACDC-branch models at ``--acdc-width``, with a dense model of the same parameter count.
Part 3 (``finetune``): a dense model of width ``--finetune-width`` is trained, its two hidden ``nn.Linear`` are
replaced by ``Quadratic.from_linear`` (exactly the same function, checked), and it is trained for
``--finetune-epochs`` more epochs (a) with every parameter, (b) with the first-order parts frozen (only the
quadratic parameters train); the dense model trained for the same extra epochs is the reference.

Data: MNIST-1D generated locally with ``mnist1d.data.make_dataset`` (5000 sequences of 40 features; its own
80/20 split; nothing is downloaded). Training: Adam (lr 1e-3), batch 128, cross-entropy, fixed epochs, test
accuracy after the last epoch, mean ± sd over seeds, one thread.

    python examples/quadratic_mnist1d.py                    # writes docs/figures/quadratic_mnist1d.{json,png}
    python examples/quadratic_mnist1d.py --quick --out /tmp/quadratic_mnist1d
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from acdc_mlp import load_mnist1d_split  # the same locally generated MNIST-1D as the ACDC example
from torch import nn

import structlin

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "figures"
FORMS = ["xu", "fan", "lowrank"]


def hidden(family: str, in_features: int, width: int) -> nn.Module:
    """One hidden layer of a model family: ``dense``, a form name, or ``<form>-acdc``."""
    if family == "dense":
        return nn.Linear(in_features, width)
    form, _, branch = family.partition("-")
    options = {"branch": "acdc", "depth": 4} if branch == "acdc" else {}
    rank = max(1, width // 4) if form == "lowrank" else None
    return structlin.Quadratic(in_features, width, form=form, rank=rank, init="random", **options)


def make_model(family: str, width: int, in_features: int = 40, classes: int = 10) -> nn.Sequential:
    return nn.Sequential(hidden(family, in_features, width), nn.ReLU(), hidden(family, width, width), nn.ReLU(),
                         nn.Linear(width, classes))


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def width_for(family: str, target: int) -> int:
    """The width whose model has the parameter count closest to ``target`` (counts grow with the width)."""
    best, lo, hi = 1, 1, 4096
    while lo <= hi:
        mid = (lo + hi) // 2
        if count(make_model(family, mid)) <= target:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return min((best, best + 1), key=lambda w: abs(count(make_model(family, w)) - target))


def tensors(data):
    x_train, y_train, x_test, y_test = (torch.as_tensor(a) for a in data)
    return x_train.float(), y_train.long(), x_test.float(), y_test.long()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def train(model: nn.Module, data, *, epochs: int, batch_size: int, lr: float, seed: int,
          parameters=None) -> float:
    """Train in place with Adam; returns the seconds spent."""
    x_train, y_train, _, _ = data
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(parameters if parameters is not None else model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(x_train.shape[0], generator=generator)
        for i in range(0, x_train.shape[0], batch_size):
            idx = order[i : i + batch_size]
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def run_family(family: str, width: int, data, seeds, args) -> dict:
    runs = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = make_model(family, width)
        seconds = train(model, data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed)
        runs.append({"seed": seed, "test_acc": accuracy(model, data[2], data[3]),
                     "train_acc": accuracy(model, data[0], data[1]), "train_seconds": seconds})
    acc = np.array([r["test_acc"] for r in runs])
    summary = {"family": family, "width": width, "params": count(make_model(family, width)),
               "test_acc_mean": float(acc.mean()), "test_acc_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
               "train_acc_mean": float(np.mean([r["train_acc"] for r in runs])),
               "train_seconds_mean": float(np.mean([r["train_seconds"] for r in runs]))}
    print(f"  {family:>13} H={width:<4} {summary['params']:>7,} params: test acc {summary['test_acc_mean']:.4f} ± "
          f"{summary['test_acc_std']:.4f}, {summary['train_seconds_mean']:.1f} s/run", flush=True)
    return {"summary": summary, "runs": runs}


def to_quadratic(dense: nn.Sequential, form: str, width: int) -> nn.Sequential:
    """A copy of ``dense`` with both hidden ``nn.Linear`` replaced by ``Quadratic.from_linear``."""
    layers = []
    for module in dense:
        if isinstance(module, nn.Linear) and module.out_features == width:
            rank = max(1, width // 4) if form == "lowrank" else None
            layers.append(structlin.Quadratic.from_linear(module, form=form, rank=rank))
        else:
            layers.append(copy.deepcopy(module))
    return nn.Sequential(*layers)


def finetune(data, seeds, args) -> dict:
    """Fine-tune after ``from_linear``: every parameter, or the quadratic parameters only."""
    width, results = args.finetune_width, {}
    for seed in seeds:
        torch.manual_seed(seed)
        dense = make_model("dense", width)
        train(dense, data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed)
        state = {k: v.clone() for k, v in dense.state_dict().items()}
        before = accuracy(dense, data[2], data[3])
        entry = {"dense_before": before}
        for form in FORMS:
            for frozen in (False, True):
                dense.load_state_dict(state)
                model = to_quadratic(dense, form, width)
                x = data[2]
                exact = bool(torch.equal(model(x), dense(x)))
                start_acc = accuracy(model, data[2], data[3])
                parameters = None
                if frozen:  # the first-order parts keep the dense weights; the rest trains
                    for m in model:
                        if isinstance(m, structlin.Quadratic):
                            for p in m.first_order_parameters():
                                p.requires_grad_(False)
                    parameters = [p for p in model.parameters() if p.requires_grad]
                train(model, data, epochs=args.finetune_epochs, batch_size=args.batch_size, lr=args.lr,
                      seed=seed + 100, parameters=parameters)
                entry[f"{form}{'-frozen' if frozen else ''}"] = {"exact": exact, "before": start_acc,
                                                                 "after": accuracy(model, data[2], data[3])}
        dense.load_state_dict(state)
        train(dense, data, epochs=args.finetune_epochs, batch_size=args.batch_size, lr=args.lr, seed=seed + 100)
        entry["dense_after"] = accuracy(dense, data[2], data[3])
        results[seed] = entry
        print(f"  seed {seed}: dense {before:.4f} → {entry['dense_after']:.4f}; " + ", ".join(
            f"{k} {v['before']:.4f} → {v['after']:.4f}" for k, v in entry.items() if isinstance(v, dict)), flush=True)
    keys = [k for k in results[seeds[0]] if isinstance(results[seeds[0]][k], dict)]
    summary = {"dense": _mean_sd([(results[s]["dense_before"], results[s]["dense_after"]) for s in seeds])}
    for k in keys:
        summary[k] = _mean_sd([(results[s][k]["before"], results[s][k]["after"]) for s in seeds])
        summary[k]["exact_start"] = all(results[s][k]["exact"] for s in seeds)
    return {"width": width, "per_seed": {str(s): v for s, v in results.items()}, "summary": summary}


def _mean_sd(pairs) -> dict:
    before, after = np.array(pairs).T
    sd = (lambda a: float(a.std(ddof=1)) if len(a) > 1 else 0.0)  # noqa: E731
    return {"before_mean": float(before.mean()), "before_std": sd(before), "after_mean": float(after.mean()),
            "after_std": sd(after)}


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    entries = [e["summary"] for part in ("equal", "acdc") for size in report[part].values() for e in size.values()]
    colors = {}
    for s in entries:
        color = colors.setdefault(s["family"], f"C{len(colors)}")
        ax.errorbar([s["params"]], [s["test_acc_mean"]], yerr=[s["test_acc_std"]], color=color,
                    marker="o" if "acdc" in s["family"] else "s", capsize=3,
                    label=s["family"] if s["family"] not in ax.get_legend_handles_labels()[1] else None)
    ax.set_xscale("log")
    ax.set_xlabel("parameters of the whole model")
    ax.set_ylabel("test accuracy (mean ± sd over seeds)")
    ax.set_title("MNIST-1D: dense vs quadratic MLPs")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    summary = report["finetune"]["summary"]
    names = list(summary)
    before = [summary[n]["before_mean"] for n in names]
    after = [summary[n]["after_mean"] for n in names]
    errors = [summary[n]["after_std"] for n in names]
    positions = np.arange(len(names))
    ax2.bar(positions - 0.2, before, 0.4, label="before fine-tuning")
    ax2.bar(positions + 0.2, after, 0.4, yerr=errors, capsize=3, label="after fine-tuning")
    ax2.set_xticks(positions, names, rotation=30, fontsize=8)
    low = min(before + after)
    ax2.set_ylim(max(0.0, low - 0.05), min(1.0, max(before + after) + 0.03))
    ax2.set_ylabel("test accuracy")
    ax2.set_title(f"fine-tuning after from_linear (H={report['finetune']['width']})")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: small data, 1 epoch, 1 seed, small widths")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dense-widths", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--acdc-width", type=int, default=512)
    parser.add_argument("--finetune-width", type=int, default=128)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.epochs, args.finetune_epochs, args.seeds, args.samples = 1, 1, [0], 1000
        args.dense_widths, args.acdc_width, args.finetune_width = [16, 32], 64, 16

    started = time.perf_counter()
    data = tensors(load_mnist1d_split(args.samples))
    print(f"mnist1d: {data[0].shape[0]} train, {data[2].shape[0]} test, {data[0].shape[1]} features", flush=True)
    report: dict = {"equal": {}, "acdc": {}}
    for dense_width in args.dense_widths:
        target = count(make_model("dense", dense_width))
        print(f"equal parameters: target {target:,} (dense H={dense_width})", flush=True)
        report["equal"][str(target)] = {f: run_family(f, width_for(f, target), data, args.seeds, args)
                                        for f in ["dense", *FORMS]}
    print(f"ACDC branches at H={args.acdc_width}", flush=True)
    acdc = {f"{f}-acdc": run_family(f"{f}-acdc", args.acdc_width, data, args.seeds, args) for f in FORMS}
    target = acdc["xu-acdc"]["summary"]["params"]
    acdc["dense"] = run_family("dense", width_for("dense", target), data, args.seeds, args)
    report["acdc"][str(target)] = acdc
    print(f"fine-tuning after from_linear (dense H={args.finetune_width})", flush=True)
    report["finetune"] = finetune(data, args.seeds, args)
    total = time.perf_counter() - started
    print(f"total time {total:.0f} s")
    report["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report["environment"] = {"torch": torch.__version__, "python": platform.python_version(),
                             "machine": platform.machine()}
    report["total_seconds"] = total
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quadratic_mnist1d.json").write_text(json.dumps(report, indent=2))
    plot(report, args.out / "quadratic_mnist1d.png")
    print(f"wrote {args.out / 'quadratic_mnist1d.json'} and {args.out / 'quadratic_mnist1d.png'}")
    return report


if __name__ == "__main__":
    main()

"""``structlin demo``: train a dense MLP on scikit-learn's digits, swap its hidden layers for every registered
kind, fine-tune, and compare accuracy, parameters, forward FLOPs and CPU latency against the dense model.

The data ship with scikit-learn (``load_digits``: 1797 8×8 images, 64 features, 10 classes); nothing is
downloaded. Split: stratified 80/20 with a fixed seed, features standardized with the training statistics.

Model: ``Linear(64, 256) → ReLU → Linear(256, 256) → ReLU → Linear(256, 10)``. Every variant swaps the two
layers whose smaller side is at least 64 (``min_features=64``), so the 10-way head stays dense. Each variant
starts as :func:`structlin.swap` decides for its ``preserve`` (``"auto"`` is exact for the quadratic kinds,
``"fit"`` fits ACDC, Fastfood and low-rank layers to the trained weights), then all parameters are fine-tuned
with the same recipe as the dense model (Adam, batch 64). Accuracy is the test accuracy after the last epoch (no
early stopping, no model selection on the test set).
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .layers.base import available_layers
from .swap import swap

HIDDEN = 256
MIN_FEATURES = 64


@dataclass(frozen=True)
class Variant:
    """One row of the demo: swap with ``kind`` and ``options``, starting as ``preserve`` says."""

    label: str
    kind: str
    options: dict = field(default_factory=dict)
    preserve: str = "auto"


#: The demo's rows. A kind that is not registered is skipped with a note.
VARIANTS = [
    Variant("acdc-8", "acdc", {"depth": 8}, "fit"),
    Variant("fastfood", "fastfood", {}, "fit"),
    Variant("quadratic-fan", "quadratic", {"form": "fan"}, "auto"),
    Variant("quadratic-xu", "quadratic", {"form": "xu"}, "auto"),
    Variant("quadratic-lowrank-8", "quadratic", {"form": "lowrank", "rank": 8}, "auto"),
    Variant("lowrank-16", "lowrank", {"rank": 16}, "fit"),
]


@dataclass(frozen=True)
class Settings:
    epochs: int = 30
    finetune_epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    latency_batch: int = 256
    latency_repeats: int = 30
    fit_iterations: int = 500
    seed: int = 0

    @classmethod
    def quick(cls) -> "Settings":
        return cls(epochs=4, finetune_epochs=2, latency_repeats=5, fit_iterations=150)


def load_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits as float32 tensors ``(x_train, y_train, x_test, y_test)``, standardized with train statistics."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as error:
        raise SystemExit(f"structlin demo needs scikit-learn ({error}); install structlin[demo]") from None
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    mean, std = x_train.mean(0), x_train.std(0)
    std[std == 0] = 1.0
    as_x = lambda a: torch.as_tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.as_tensor(a, dtype=torch.int64)  # noqa: E731
    return as_x(x_train), as_y(y_train), as_x(x_test), as_y(y_test)


def dense_mlp(in_features: int, classes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, classes)
    )


def _progress(iterable, desc: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress bars are a nicety: plain lines without tqdm
        print(desc, file=sys.stderr)
        return iterable
    return tqdm(iterable, desc=f"{desc:<28}", leave=False, file=sys.stderr, dynamic_ncols=True)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: Settings, epochs: int, desc: str) -> float:
    """Adam on cross-entropy with shuffled mini-batches from a seeded generator; returns the last epoch's loss."""
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=settings.lr)
    model.train()
    loss_value = math.nan
    bar = _progress(range(epochs), desc)
    for _ in bar:
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), settings.batch_size):
            index = order[start : start + settings.batch_size]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[index]), y[index])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
        loss_value = total / len(x)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss_value:.3f}")
    model.eval()
    return loss_value


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(-1) == y).float().mean())


@torch.no_grad()
def latency(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of one forward pass on ``x`` (eval mode, no grad), after three warm-up calls."""
    model.eval()
    for _ in range(3):
        model(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure(model: nn.Module, data, settings: Settings, flops: Callable[[nn.Module, torch.Tensor], int]) -> dict:
    x_train, y_train, x_test, y_test = data
    batch = x_test[: settings.latency_batch]
    return {
        "accuracy": accuracy(model, x_test, y_test),
        "train_accuracy": accuracy(model, x_train, y_train),
        "params": count_params(model),
        "forward_flops": int(flops(model, batch)),
        "flops_batch": len(batch),
        "latency_ms": 1e3 * latency(model, batch, settings.latency_repeats),
    }


def run_variant(variant: Variant, dense: nn.Module, data, settings: Settings, flops) -> dict:
    import copy

    x_train, y_train, x_test, y_test = data
    model = copy.deepcopy(dense)
    torch.manual_seed(settings.seed)
    result = swap(model, variant.kind, min_features=MIN_FEATURES, preserve=variant.preserve,
                  fit_iterations=settings.fit_iterations, **variant.options)
    after_swap = accuracy(model, x_test, y_test)
    loss = train(model, x_train, y_train, settings, settings.finetune_epochs, f"fine-tune {variant.label}")
    return {"status": "ok", "accuracy_after_swap": after_swap, "train_loss": loss, **measure(model, data, settings, flops),
            "swap": result.to_dict()}


def table(dense: dict, rows: list[dict]) -> str:
    head = ("model", "start", "acc. after swap", "accuracy", "params", "× dense", "fwd FLOPs", "× dense",
            "latency ms", "× dense")
    lines = [head]

    def fmt(label, start, entry):
        return (
            label,
            start,
            "–" if entry.get("accuracy_after_swap") is None else f"{entry['accuracy_after_swap']:.3f}",
            f"{entry['accuracy']:.3f}",
            f"{entry['params']:,}",
            f"{entry['params'] / dense['params']:.2f}",
            f"{entry['forward_flops']:,}",
            f"{entry['forward_flops'] / dense['forward_flops']:.2f}",
            f"{entry['latency_ms']:.3f}",
            f"{entry['latency_ms'] / dense['latency_ms']:.2f}",
        )

    lines.append(fmt("dense", "trained", dense))
    for row in rows:
        if row["status"] == "ok":
            methods = sorted({layer["method"] for layer in row["swap"]["layers"]})
            lines.append(fmt(row["label"], "/".join(methods), row))
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    out = []
    for i, row in enumerate(lines):
        out.append("  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def plot(dense: dict, rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot written (install structlin[demo])", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([dense["params"]], [dense["accuracy"]], marker="*", s=160, color="black", label="dense", zorder=3)
    for row in rows:
        if row["status"] == "ok":
            ax.scatter([row["params"]], [row["accuracy"]], s=50, label=row["label"], zorder=2)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (whole model, log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title("digits MLP: hidden layers swapped, then fine-tuned")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def run(out: Path, *, quick: bool, threads: int, flops, only: list[str] | None = None) -> int:
    """Run the demo, print the table, write ``demo.json`` and ``demo.png`` into ``out``; returns an exit code."""
    variants = [v for v in VARIANTS if only is None or v.label in only or v.kind in only]
    if only is not None and not variants:
        raise SystemExit(f"--only {','.join(only)} names no variant; labels: {', '.join(v.label for v in VARIANTS)}")
    settings = Settings.quick() if quick else Settings()
    torch.set_num_threads(threads)
    torch.manual_seed(settings.seed)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(settings.seed)
    x_train, y_train, x_test, y_test = data
    print(f"digits: {len(x_train)} train / {len(x_test)} test, {x_train.shape[1]} features; "
          f"{threads} thread(s); {'quick' if quick else 'full'} run")

    dense_model = dense_mlp(x_train.shape[1], int(y_train.max()) + 1)
    train(dense_model, x_train, y_train, settings, settings.epochs, "train dense")
    dense = measure(dense_model, data, settings, flops)

    rows, failed = [], 0
    registered = available_layers()
    for variant in variants:
        row = {"label": variant.label, "kind": variant.kind, "options": variant.options, "preserve": variant.preserve}
        if variant.kind not in registered:
            print(f"skipping {variant.label}: kind {variant.kind!r} is not registered "
                  f"(registered: {', '.join(registered)})")
            rows.append({**row, "status": "skipped"})
            continue
        try:
            rows.append({**row, **run_variant(variant, dense_model, data, settings, flops)})
        except Exception as error:  # report and go on with the other kinds; the exit code says it failed
            traceback.print_exc()
            print(f"{variant.label} failed: {error}", file=sys.stderr)
            rows.append({**row, "status": "error", "error": f"{type(error).__name__}: {error}"})
            failed += 1

    print()
    print(table(dense, rows))
    print(f"\nFLOPs: one forward pass on a batch of {dense['flops_batch']} (multiply-add = 2); latency: median "
          f"of {settings.latency_repeats} forward passes on that batch, CPU, {threads} thread(s).")
    wrote_png = plot(dense, rows, out / "demo.png")
    report = {
        "config": {**settings.__dict__, "quick": quick, "threads": threads, "hidden": HIDDEN,
                   "min_features": MIN_FEATURES, "dataset": "sklearn load_digits"},
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "cpu_count": __import__("os").cpu_count()},
        "dense": dense,
        "variants": rows,
    }
    (out / "demo.json").write_text(json.dumps(report, indent=2, default=_json_default))
    print(f"wrote {out / 'demo.json'}" + (f" and {out / 'demo.png'}" if wrote_png else ""))
    return 1 if failed else 0


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return str(value)

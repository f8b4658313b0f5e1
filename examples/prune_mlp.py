"""Shrink a wide dense MLP on scikit-learn's digits with ``structlin.prune.shrink`` at several tolerances, then
swap the shrunk hidden layers to ACDC.

    python examples/prune_mlp.py                       # writes docs/figures/prune_mlp.{json,png}
    python examples/prune_mlp.py --quick --out /tmp/prune_mlp

Data: ``load_digits`` (ships with scikit-learn; nothing is downloaded), the ``structlin demo`` split (stratified
80/20 train/test, standardized with training statistics), and the training part split again, stratified, into
75% train / 25% validation (1077 / 360 / 360 rows). Pruning decisions and the tolerance use the validation
rows; scores and fine-tuning the training rows; the test rows are read only to report accuracy.

Model: ``Linear(64, 512) → ReLU → Linear(512, 512) → ReLU → Linear(512, 10)``, Adam (lr 1e-3, batch 64,
cross-entropy) for ``--epochs`` epochs. For every seed and every tolerance ε (relative to the validation
accuracy), ``shrink`` runs on the trained model with the Taylor score, ``--round-steps`` masked fine-tuning steps
after each round and ``--finetune-steps`` fine-tuning steps after the rebuild.
Then the ε = 1% model's two hidden Linears (and, for comparison, the unpruned model's) are swapped to ACDC
(depth 8, ``preserve="fit"``) and fine-tuned for ``--acdc-epochs`` epochs. Parameters and forward FLOPs come
from ``structlin.report`` on one batch of 256 rows; one thread throughout.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

import structlin
from structlin.demo import Settings, accuracy, load_data, train

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "figures"
TOLERANCES = (0.005, 0.01, 0.02)
WIDTH = 512
FLOP_ROWS = 256


def split_validation(x, y, seed: int):
    from sklearn.model_selection import train_test_split

    index = torch.arange(len(x)).numpy()
    train, val = train_test_split(index, test_size=0.25, random_state=seed, stratify=y.numpy())
    return (x[train], y[train]), (x[val], y[val])


def wide_mlp(in_features: int, classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.ReLU(),
                         nn.Linear(WIDTH, classes))


def costs(model: nn.Module, x: torch.Tensor) -> dict:
    total = structlin.report(model, x[:FLOP_ROWS], backward=False).total
    return {"params": total.params, "forward_flops": total.forward_flops}


def entry(model, x_test, y_test, x_flops, **extra) -> dict:
    return {**costs(model, x_flops), "test_acc": accuracy(model, x_test, y_test), **extra}


def run_seed(seed: int, args, settings: Settings) -> dict:
    torch.manual_seed(seed)
    x_all, y_all, x_test, y_test = load_data(0)
    (x_train, y_train), (x_val, y_val) = split_validation(x_all, y_all, 0)
    dense = wide_mlp(x_train.shape[1], 10)
    train(dense, x_train, y_train, settings, args.epochs, f"train dense (seed {seed})")
    x_flops = x_test
    out = {"dense": entry(dense, x_test, y_test, x_flops, val_acc=accuracy(dense, x_val, y_val)), "shrink": {}}
    shrunk_models = {}
    for eps in TOLERANCES:
        start = time.perf_counter()
        result = structlin.prune.shrink(dense, ((x_train, y_train), (x_val, y_val)), tolerance=eps,
                                        finetune_steps=args.finetune_steps, round_steps=args.round_steps,
                                        seed=seed)
        seconds = time.perf_counter() - start
        print(f"seed {seed}, ε = {eps:.1%} ({seconds:.1f} s)\n{result}\n")
        shrunk_models[eps] = result.model
        out["shrink"][str(eps)] = entry(
            result.model, x_test, y_test, x_flops, seconds=seconds, units=[p.units_after for p in result.layers],
            val_before=result.metric_before, val_threshold=result.threshold, val_pruned=result.metric_pruned,
            val_finetuned=result.metric_finetuned, finetune_kept=result.finetune_kept, val_after=result.metric_after,
            rounds=result.rounds, evaluations=result.evaluations)
    out["acdc"] = {}
    sources = {"dense": dense, "shrunk-1%": shrunk_models[0.01]}
    for label in args.acdc_from:
        source = sources[label]
        model = copy.deepcopy(source)
        swapped = structlin.swap(model, "acdc", include=["0", "2"], preserve="fit",
                                 fit_iterations=settings.fit_iterations, depth=8)
        after_swap = accuracy(model, x_test, y_test)
        train(model, x_train, y_train, settings, args.acdc_epochs, f"fine-tune acdc {label}")
        out["acdc"][label] = entry(model, x_test, y_test, x_flops, test_acc_after_swap=after_swap,
                                   fit_errors=[e.relative_error for e in swapped.layers])
        print(f"seed {seed}, {label} → acdc-8: test accuracy {after_swap:.3f} after the swap, "
              f"{out['acdc'][label]['test_acc']:.3f} after fine-tuning, {out['acdc'][label]['params']:,} params")
    return out


def summarize(runs: list[dict]) -> list[dict]:
    """One row per model: means (and sd of the test accuracy) over seeds."""
    def row(label, entries):
        accs = [e["test_acc"] for e in entries]
        return {
            "model": label,
            "params": statistics.mean(e["params"] for e in entries),
            "forward_flops": statistics.mean(e["forward_flops"] for e in entries),
            "test_acc_mean": statistics.mean(accs),
            "test_acc_sd": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "units": [statistics.mean(u) for u in zip(*(e["units"] for e in entries))] if "units" in entries[0]
            else None,
        }

    rows = [row("dense 512-512", [r["dense"] for r in runs])]
    rows += [row(f"shrunk ε={float(eps):.1%}", [r["shrink"][eps] for r in runs]) for eps in runs[0]["shrink"]]
    rows += [row(f"{label} → acdc-8", [r["acdc"][label] for r in runs]) for label in runs[0]["acdc"]]
    return rows


def markdown(rows: list[dict]) -> str:
    dense = rows[0]
    lines = ["| model | hidden units | params | × dense | fwd FLOPs (256 rows) | × dense | test accuracy |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        units = "–" if r["units"] is None else " / ".join(f"{u:.0f}" for u in r["units"])
        if r["model"].startswith("dense 512"):
            units = "512 / 512"
        lines.append(f"| {r['model']} | {units} | {r['params']:,.0f} | {r['params'] / dense['params']:.3f} | "
                     f"{r['forward_flops']:,.0f} | {r['forward_flops'] / dense['forward_flops']:.3f} | "
                     f"{r['test_acc_mean']:.3f} ± {r['test_acc_sd']:.3f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in rows:
        marker = "s" if "acdc" in r["model"] else ("o" if r["model"].startswith("shrunk") else "D")
        ax.errorbar(r["params"], r["test_acc_mean"], yerr=r["test_acc_sd"], fmt=marker, capsize=3, label=r["model"])
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("test accuracy (mean ± sd over seeds)")
    ax.set_title("digits: shrink a 64-512-512-10 MLP, then swap to ACDC")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test: one seed, few epochs and steps")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--round-steps", type=int, default=50)
    parser.add_argument("--acdc-epochs", type=int, default=20)
    parser.add_argument("--acdc-from", nargs="+", default=["dense", "shrunk-1%"], choices=["dense", "shrunk-1%"])
    args = parser.parse_args()
    settings = Settings()
    if args.quick:
        args.seeds, args.epochs, args.finetune_steps, args.round_steps, args.acdc_epochs = 1, 3, 10, 5, 1
        args.acdc_from = ["shrunk-1%"]
        settings = dataclasses.replace(Settings.quick(), fit_iterations=20)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    runs = [run_seed(seed, args, settings) for seed in range(args.seeds)]
    rows = summarize(runs)
    table = markdown(rows)
    print(table)
    report = {
        "config": {
            "quick": args.quick, "seeds": args.seeds, "epochs": args.epochs, "width": WIDTH,
            "tolerances": list(TOLERANCES), "finetune_steps": args.finetune_steps, "round_steps": args.round_steps,
            "acdc_epochs": args.acdc_epochs, "acdc_from": args.acdc_from, "fit_iterations": settings.fit_iterations,
            "flop_rows": FLOP_ROWS, "torch": torch.__version__, "python": platform.python_version(),
            "seconds": time.perf_counter() - start,
        },
        "runs": runs,
        "summary": rows,
        "markdown": table,
    }
    (args.out / "prune_mlp.json").write_text(json.dumps(report, indent=1))
    plot(rows, args.out / "prune_mlp.png")
    print(f"wrote {args.out / 'prune_mlp.json'} and prune_mlp.png in {report['config']['seconds']:.0f} s")


if __name__ == "__main__":
    main()

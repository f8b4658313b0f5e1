"""How well does a depth-K ACDC cascade approximate a dense random matrix?

The ACDC paper (Moczulski et al., ICLR 2016) motivates cascades of ``C⁻¹ diag(D) C diag(A)`` blocks by their
ability to approximate any linear operator given enough depth. This script measures it: it fits a linear
cascade (``bias=False``, no activation, N = 256) to one fixed random matrix ``W`` with entries ``N(0, 1/256)``
and reports the relative Frobenius error ``‖M − W‖_F / ‖W‖_F`` of the fitted matrix ``M = layer.to_dense()``
for depths K ∈ {1, 2, 4, 8, 16, 32}, with and without the fixed random permutations between blocks.

Objective: the exact squared Frobenius distance, computed by running the cascade on the identity matrix
(``layer(I) = Mᵀ``), ``loss = mean((layer(I) − Wᵀ)²) = ‖M − W‖_F² / N²``. This is the expectation of the mean
squared error ``mean((layer(X) − X Wᵀ)²)`` over Gaussian inputs ``X`` (up to the factor 1/N), without its
sampling noise, at the cost of one batch of N = 256 rows per step. Adam, a constant learning rate, the same
number of steps for every depth.

Baseline: the best rank-r approximation of ``W`` (truncated SVD, Eckart–Young) with as many parameters as a
depth-K cascade: ``2·K·N`` parameters for the cascade, ``r·(N + N)`` for the rank-r factors, so ``r = K``.
A zero matrix has relative error 1.

    python examples/acdc_operator_approximation.py                 # full run → docs/figures/
    python examples/acdc_operator_approximation.py --sweep         # the small init × learning-rate sweep
    python examples/acdc_operator_approximation.py --quick --out /tmp/acdc_op
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import structlin

N = 256
DEPTHS = [1, 2, 4, 8, 16, 32]
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "figures"


def target_matrix(seed: int = 0, n: int = N) -> torch.Tensor:
    """The fixed random operator: entries ``N(0, 1/n)`` (so ``‖W x‖ ≈ ‖x‖``), from its own generator."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, n, generator=generator, dtype=torch.float64).div_(n**0.5).float()


def relative_error(approx: torch.Tensor, target: torch.Tensor) -> float:
    return ((approx.double() - target.double()).norm() / target.double().norm()).item()


def low_rank_errors(target: torch.Tensor, ranks: list[int]) -> dict[int, float]:
    """Relative Frobenius error of the best rank-r approximation: ``sqrt(Σ_{i>r} s_i² / Σ s_i²)``."""
    energy = torch.linalg.svdvals(target.double()).square()
    total = energy.sum()
    return {r: (energy[r:].sum() / total).sqrt().item() for r in ranks}


def fit(target: torch.Tensor, depth: int, *, permute: bool, init: str, lr: float, steps: int, seed: int,
        log_every: int = 100) -> dict:
    """Fit one cascade to ``target``; returns the final error, its history and the wall time."""
    n = target.shape[0]
    torch.manual_seed(seed)  # the init and the permutations
    layer = structlin.ACDC(n, n, depth=depth, bias=False, init=init, permute=permute)
    optimizer = torch.optim.Adam(layer.parameters(), lr=lr)
    eye = torch.eye(n)
    target_t = target.T.contiguous()  # layer(I) is the transpose of the layer's matrix
    history = [(0, relative_error(layer.to_dense(), target))]
    start = time.perf_counter()
    for step in range(1, steps + 1):
        loss = (layer(eye) - target_t).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % log_every == 0 or step == steps:
            history.append((step, relative_error(layer.to_dense(), target)))
    seconds = time.perf_counter() - start
    final = history[-1][1]
    return {
        "depth": depth,
        "permute": permute,
        "init": init,
        "lr": lr,
        "steps": steps,
        "params": sum(p.numel() for p in layer.parameters()),
        "relative_error": final,
        "best_relative_error": min(e for _, e in history),
        "finite": bool(torch.isfinite(layer.A).all() and torch.isfinite(layer.D).all()),
        "seconds": seconds,
        "history": history,
    }


def run_sweep(target: torch.Tensor, args) -> dict:
    """A small grid over init × learning rate at one depth, with permutations."""
    rows = []
    for init in args.sweep_inits:
        for lr in args.sweep_lrs:
            result = fit(target, args.sweep_depth, permute=True, init=init, lr=lr, steps=args.sweep_steps,
                         seed=args.seed, log_every=max(1, args.sweep_steps // 10))
            rows.append(result)
            print(f"  init={init:<20} lr={lr:<7g} K={args.sweep_depth}: relative error {result['relative_error']:.4f}"
                  f"  ({result['seconds']:.0f} s)", flush=True)
    best = min(rows, key=lambda r: r["relative_error"])
    print(f"best: init={best['init']} lr={best['lr']:g} (relative error {best['relative_error']:.4f})")
    return {"depth": args.sweep_depth, "steps": args.sweep_steps, "runs": rows,
            "best": {"init": best["init"], "lr": best["lr"]}}


def format_table(report: dict) -> str:
    lines = [
        "| K | params (2·K·N) | ACDC, permutations | ACDC, no permutations | best rank-K (truncated SVD) |",
        "|---|---|---|---|---|",
    ]
    by_key = {(r["depth"], r["permute"]): r for r in report["runs"]}
    for k in report["config"]["depths"]:
        cells = []
        for permute in (True, False):
            r = by_key.get((k, permute))
            cells.append("—" if r is None else f"{r['relative_error']:.4f}")
        lines.append(f"| {k} | {2 * k * N:,} | {cells[0]} | {cells[1]} | {report['low_rank'][str(k)]:.4f} |")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = report["config"]["depths"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for permute, color, label in ((True, "C3", "ACDC, permutations"), (False, "C0", "ACDC, no permutations")):
        runs = sorted((r for r in report["runs"] if r["permute"] == permute), key=lambda r: r["depth"])
        left.plot([r["depth"] for r in runs], [r["relative_error"] for r in runs], "o-", color=color, label=label)
    left.plot(depths, [report["low_rank"][str(k)] for k in depths], "s--", color="C2",
              label="best rank-K (same #params)")
    left.axhline(1.0, color="0.6", lw=0.8, ls=":")
    left.set_xscale("log", base=2)
    left.set_xticks(depths, [str(k) for k in depths])
    left.set_xlabel("depth K (params = 2·K·256)")
    left.set_ylabel("relative Frobenius error ‖M − W‖ / ‖W‖")
    left.set_title(f"fit to a random 256×256 matrix ({report['config']['steps']} Adam steps)")
    left.grid(True, alpha=0.3)
    left.legend(fontsize=8)

    cmap = plt.get_cmap("viridis")
    for i, r in enumerate(sorted((r for r in report["runs"] if r["permute"]), key=lambda r: r["depth"])):
        steps, errors = zip(*r["history"])
        right.plot(steps, errors, color=cmap(i / max(1, len(depths) - 1)), label=f"K = {r['depth']}")
    right.set_xlabel("Adam step")
    right.set_ylabel("relative Frobenius error")
    right.set_title("training curves (with permutations)")
    right.set_ylim(0, 1.5)
    right.grid(True, alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: K ∈ {1, 2, 4}, 60 steps")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the JSON and PNG outputs")
    parser.add_argument("--depths", type=int, nargs="+", default=DEPTHS)
    parser.add_argument("--steps", type=int, default=3000, help="Adam steps for every depth (default %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--init", default="variance-preserving", help="ACDC init (default %(default)s; chosen by --sweep)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the target matrix and of the layers")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--sweep", action="store_true", help="run only the init × learning-rate sweep")
    parser.add_argument("--sweep-depth", type=int, default=16)
    parser.add_argument("--sweep-steps", type=int, default=1000)
    parser.add_argument("--sweep-inits", nargs="+", default=["paper", "variance-preserving", "identity"])
    parser.add_argument("--sweep-lrs", type=float, nargs="+", default=[3e-3, 1e-2, 3e-2])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.depths, args.steps = [1, 2, 4], 60
        args.sweep_depth, args.sweep_steps, args.sweep_lrs = 2, 20, [1e-2]

    args.out.mkdir(parents=True, exist_ok=True)
    target = target_matrix(args.seed)
    environment = {"torch": torch.__version__, "python": platform.python_version(), "threads": args.threads}
    started = time.perf_counter()

    if args.sweep:
        sweep = run_sweep(target, args)
        sweep["total_seconds"] = time.perf_counter() - started
        sweep["environment"] = environment
        path = args.out / "acdc_operator_sweep.json"
        path.write_text(json.dumps(sweep, indent=2))
        print(f"wrote {path} ({sweep['total_seconds']:.0f} s)")
        return sweep

    runs = []
    for permute in (True, False):
        for depth in args.depths:
            result = fit(target, depth, permute=permute, init=args.init, lr=args.lr, steps=args.steps,
                         seed=args.seed, log_every=max(1, args.steps // 30))
            runs.append(result)
            print(f"K={depth:>2} permute={permute!s:<5}: relative error {result['relative_error']:.4f} "
                  f"(best seen {result['best_relative_error']:.4f}), {result['seconds']:.1f} s", flush=True)
    report = {
        "config": {"n": N, "depths": args.depths, "steps": args.steps, "lr": args.lr, "init": args.init,
                   "optimizer": "Adam", "loss": "mean((layer(I) - W.T)**2) = ||M - W||_F^2 / N^2",
                   "seed": args.seed, "quick": args.quick, "target": "W_ij ~ N(0, 1/N)"},
        "environment": environment,
        "low_rank": {str(k): e for k, e in low_rank_errors(target, args.depths).items()},
        "runs": runs,
        "total_seconds": time.perf_counter() - started,
    }
    print(format_table(report))
    print(f"total time {report['total_seconds']:.0f} s")
    (args.out / "acdc_operator_approximation.json").write_text(json.dumps(report, indent=2))
    plot(report, args.out / "acdc_operator_approximation.png")
    print(f"wrote {args.out / 'acdc_operator_approximation.json'} and {args.out / 'acdc_operator_approximation.png'}")
    return report


if __name__ == "__main__":
    main()

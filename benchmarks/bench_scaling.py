"""Where each kind wins: time and saved bytes of every layer kind against ``nn.Linear(N, N)``, over N and rows.

Kinds (square, N → N, float32, forward+backward with a ``sum()`` loss, as the other suites):

* ``acdc-depth1``, ``acdc-depth4``, ``acdc-depth12``: ``ACDC(N, N, depth=K)`` (default options: permutations,
  ``recompute=True``, ``path="auto"``);
* ``fastfood``: ``Fastfood(N, N)`` (one block);
* ``lowrank-N/8``: ``LowRank(N, N, rank=N // 8)``;
* ``monarch``: ``Monarch(N, N)`` (default ``nblocks``, the largest power of two ``k`` with ``k² ≤ N``: ``2N²/k``
  parameters, about ``2N^1.5``);
* ``quadratic-xu-acdc4``: ``Quadratic(N, N, form="xu", branch="acdc", depth=4)``, an O(N log N) quadratic layer
  (three ACDC parts; not a drop-in for ``nn.Linear``, shown for its cost).

As a script, the crossover chart of ``docs/benchmarks.md``: for each ``(N, rows)`` every kind's step alternates
with ``nn.Linear``'s round by round (the order rotating each round), and a kind's figure is the median of its
per-round ratios ``time(kind) / time(nn.Linear)``, which is robust to bursts of load on a shared machine. Saved
bytes are the activations autograd saves (``torch.autograd.graph.saved_tensors_hooks``, the tensors computed
from the input, as ``structlin.report`` counts them)::

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \\
      python benchmarks/bench_scaling.py --sizes 64,128,256,512,1024,2048,4096,8192,16384 --rows 128,2048 \\
        --rounds 9 --out docs/figures/scaling

writes ``scaling.json`` and ``scaling.png`` there (with ``--add --kinds …``, the rows of those kinds are measured
and put into the existing ``scaling.json``, the other kinds' rows kept). Under pytest each kind and ``nn.Linear`` is one benchmark of
group ``scaling forward+backward N=… rows=…`` (``--sizes``, ``--batch`` as in the other suites); collected with
``--benchmark-disable`` they run once at N = 256 as a smoke test.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from structlin import ACDC, Fastfood, LowRank, Monarch, Quadratic

from steps import training_step

KINDS = {
    "acdc-depth1": lambda n: ACDC(n, n, depth=1),
    "acdc-depth4": lambda n: ACDC(n, n, depth=4),
    "acdc-depth12": lambda n: ACDC(n, n, depth=12),
    "fastfood": lambda n: Fastfood(n, n),
    "lowrank-N/8": lambda n: LowRank(n, n, rank=max(1, n // 8)),
    "monarch": lambda n: Monarch(n, n),
    "quadratic-xu-acdc4": lambda n: Quadratic(n, n, form="xu", branch="acdc", depth=4),
}
REFERENCE = "nn.Linear"


def build(name: str, n: int) -> nn.Module:
    return nn.Linear(n, n) if name == REFERENCE else KINDS[name](n)


@pytest.mark.parametrize("impl", [*KINDS, REFERENCE])
def test_scaling_forward_backward(timed, impl, n, batch, bench_device):
    torch.manual_seed(0)
    module = build(impl, n).to(bench_device)
    x = torch.randn(batch, n, device=bench_device, requires_grad=True)
    timed(f"scaling forward+backward N={n} rows={batch}", training_step(module, x))


def saved_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Activation bytes autograd saves for backward in one forward of ``module`` on ``x``: the tensors that
    ``saved_tensors_hooks`` sees and that were computed from ``x`` (as ``structlin.report`` counts them; a
    parameter or a matrix computed from parameters alone is not an activation)."""
    import structlin

    return structlin.report(module, x.detach(), backward=False).total.saved_bytes


def alternated(n: int, rows: int, rounds: int, kinds: list[str]) -> list[dict]:
    """Each kind against ``nn.Linear`` on one ``(rows, n)`` input: median times, the median per-round ratio and
    the saved bytes of both, the steps alternating (the order rotating by one each round)."""
    import statistics
    import time

    torch.manual_seed(0)
    x = torch.randn(rows, n, requires_grad=True)
    names = [REFERENCE, *kinds]
    modules = {name: build(name, n) for name in names}
    steps = {name: training_step(module, x) for name, module in modules.items()}
    for step in steps.values():  # warm-up: native build, caches, first-touch of buffers
        step()
    times = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    reference_saved = saved_bytes(modules[REFERENCE], x)
    results = []
    for name in kinds:
        ratios = [a / b for a, b in zip(times[name], times[REFERENCE])]
        results.append({
            "kind": name, "n": n, "rows": rows, "rounds": rounds,
            "ms": 1e3 * statistics.median(times[name]), "linear_ms": 1e3 * statistics.median(times[REFERENCE]),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "saved_bytes": saved_bytes(modules[name], x), "linear_saved_bytes": reference_saved,
        })
    return results


def plot(results: list[dict], path: str) -> None:
    """Time (top) and saved bytes (bottom) as multiples of ``nn.Linear``'s, against N, one panel per rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows_values = sorted({r["rows"] for r in results})
    kinds = list(dict.fromkeys(r["kind"] for r in results))
    fig, axes = plt.subplots(2, len(rows_values), figsize=(6 * len(rows_values), 8), squeeze=False, sharex=True)
    for column, rows in enumerate(rows_values):
        for row, (key, label) in enumerate((("ratio", "time / nn.Linear's"), ("saved", "saved bytes / nn.Linear's"))):
            ax = axes[row][column]
            for kind in kinds:
                points = sorted((r["n"], r["ratio"] if key == "ratio" else r["saved_bytes"] / r["linear_saved_bytes"])
                                for r in results if r["kind"] == kind and r["rows"] == rows)
                ax.plot(*zip(*points), marker="o", label=kind)
            ax.axhline(1.0, color="black", linewidth=1)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_ylabel(label)
            if row == 0:
                ax.set_title(f"{rows} rows (below the line: the kind is faster than nn.Linear)")
            else:
                ax.set_xlabel("N (layer N → N)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("forward+backward, float32, ratios per round against nn.Linear(N, N) in the same run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    import argparse
    import json
    import os
    import platform

    parser = argparse.ArgumentParser(description="the crossover chart: every kind against nn.Linear over N and rows")
    parser.add_argument("--sizes", default="64,128,256,512,1024,2048,4096,8192,16384")
    parser.add_argument("--rows", default="128,2048")
    parser.add_argument("--rounds", type=int, default=9, help="rounds per size (3x for the cheapest, 1/3 for the "
                        "largest)")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="folder for scaling.json and scaling.png (else print only)")
    parser.add_argument("--add", action="store_true", help="keep the other kinds' rows of the scaling.json already "
                        "in --out (this run's kinds replace theirs) and redraw the chart from all of them")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for rows in (int(v) for v in args.rows.split(",")):
        for n in (int(v) for v in args.sizes.split(",")):
            # cheap steps get more rounds (bursts of load cost them most); the largest fewer
            size = n * n * rows
            rounds = 3 * args.rounds if size <= 1024 * 1024 * 128 else args.rounds if size <= 4096 * 4096 * 2048 \
                else max(3, args.rounds // 3)
            for result in alternated(n, rows, rounds, args.kinds.split(",")):
                results.append(result)
                print(f"rows={rows:5d} N={n:6d} {result['kind']:>20s} ratio {result['ratio']:7.3f} "
                      f"({result['ms']:9.3f} ms vs {result['linear_ms']:9.3f}) saved {result['saved_bytes']:>11,d} "
                      f"vs {result['linear_saved_bytes']:>11,d}", flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "scaling.json")
        machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                   "torch": torch.__version__}
        record = {"machine": machine, "results": results}
        if args.add and os.path.exists(path):
            with open(path) as f:
                earlier = json.load(f)
            kinds = set(args.kinds.split(","))
            # each row is a ratio to nn.Linear measured in its own run, so rows of separate runs can share a chart
            record = {"machine": earlier["machine"],
                      "added": [*earlier.get("added", []), {"kinds": sorted(kinds), "machine": machine}],
                      "results": [r for r in earlier["results"] if r["kind"] not in kinds] + results}
        with open(path, "w") as f:
            json.dump(record, f, indent=1)
        plot(record["results"], os.path.join(args.out, "scaling.png"))


if __name__ == "__main__":
    main()

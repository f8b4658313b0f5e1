"""Speed of quadratic layers against ``nn.Linear`` and against each other (float32, batch 128 by default).

Group ``quadratic forward+backward N=…`` (square layers, N → N):

* ``xu-dense``: ``Quadratic(N, N, form="xu", branch="dense")``: one matmul over three concatenated weights;
* ``nn.Linear-3N``: ``nn.Linear(N, 3N)``, the same matmul as a plain layer (the reference for ``xu-dense``);
* ``nn.Linear``: ``nn.Linear(N, N)``, a plain layer of the same shape;
* ``fan-dense``, ``lowrank-dense`` (rank N/8): the other forms with dense branches;
* ``xu-acdc-depth4``: ``Quadratic(N, N, form="xu", branch="acdc", depth=4)`` (reference: ``xu-dense``).

Dense quadratic layers at N = 16384 need several GB and are skipped there.

On a shared machine the load changes between pytest-benchmark's groups of rounds; for the issue's two ratios run
this file as a script, which alternates the two layers of each pair step by step and reports the median of the
per-round ratios (one process, same input)::

    python benchmarks/bench_quadratic.py --n 4096 --batch 128 --rounds 21
"""

import pytest
import torch
from torch import nn

from structlin import Quadratic

from steps import alternated_pair, training_step

IMPLS = {
    "xu-dense": lambda n: Quadratic(n, n, form="xu", branch="dense"),
    "nn.Linear-3N": lambda n: nn.Linear(n, 3 * n),
    "nn.Linear": lambda n: nn.Linear(n, n),
    "fan-dense": lambda n: Quadratic(n, n, form="fan", branch="dense"),
    "lowrank-dense": lambda n: Quadratic(n, n, form="lowrank", rank=max(1, n // 8), branch="dense"),
    "xu-acdc-depth4": lambda n: Quadratic(n, n, form="xu", branch="acdc", depth=4),
}
DENSE = {"xu-dense", "nn.Linear-3N", "fan-dense", "lowrank-dense"}
#: the issue's bars: (layer, reference, what the ratio time(layer) / time(reference) must satisfy)
BARS = [("xu-dense", "nn.Linear-3N", "<= 1.15"), ("xu-acdc-depth4", "xu-dense", "<= 0.2 (5x faster)")]


@pytest.mark.parametrize("impl", list(IMPLS))
def test_quadratic_forward_backward(timed, impl, n, batch, bench_device):
    if impl in DENSE and n > 4096:
        pytest.skip("dense quadratic weights at this size need several GB")
    torch.manual_seed(0)
    module = IMPLS[impl](n).to(bench_device)
    x = torch.randn(batch, n, device=bench_device, requires_grad=True)

    timed(f"quadratic forward+backward N={n}", training_step(module, x))


def interleaved_ratios(n: int, batch: int, rounds: int) -> list[dict]:
    """Median times and the median per-round ratio of each pair in :data:`BARS`, the pair's steps alternating."""
    torch.manual_seed(0)
    x = torch.randn(batch, n, requires_grad=True)
    results = []
    for layer, reference, bar in BARS:
        steps = [training_step(IMPLS[name](n), x) for name in (layer, reference)]
        results.append({"layer": layer, "reference": reference, "bar": bar,
                        **alternated_pair(*steps, rounds, warmup=1)})
        del steps
    return results


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description="the issue's two ratios, measured by alternating steps")
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps({"n": args.n, "batch": args.batch, "rounds": args.rounds, "threads": torch.get_num_threads(),
                      "results": interleaved_ratios(args.n, args.batch, args.rounds)}, indent=2))

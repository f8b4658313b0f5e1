"""Speed of ``structlin.compat.torch_dct`` against torch-dct 0.1.6, function by function (float32).

Each group ``compat <function> <forward|forward+backward> N=…`` holds ``torch_dct`` and ``structlin`` (the drop-in)
on the same tensor. Inputs at size ``N`` (the length of every transformed dimension):

* ``dct``, ``idct``, ``dct1``, ``idct1``, ``LinearDCT`` (a ``LinearDCT(N, "dct")`` layer): ``(batch, N)``;
* ``dct_2d``, ``idct_2d``, ``apply_linear_2d`` (with each library's ``LinearDCT(N, "dct")``): ``(B, N, N)`` with
  ``B = max(1, 2²² / N²)`` (64 images at N = 256, 4 at 1024, 1 from 2048), up to N = 4096;
* ``dct_3d``, ``idct_3d``, ``apply_linear_3d``: one ``N × N × N`` cube, up to N = 256.

torch-dct's ``LinearDCT`` multiplies by the dense ``N × N`` matrix, so the ``LinearDCT`` and ``apply_linear_*`` rows
stop where that matrix or its products get too large (N = 4096 in 1-D, N = 1024 in 2-D). When collected with
``--benchmark-disable`` (the smoke run of the test command) the 2-D batch is 4 and the cube 32 on a side.

For the ratios, run this file as a script: it alternates the two libraries call by call, in one process on the same
input, and reports the median of the per-round ratios ``time(torch_dct) / time(structlin)`` (the speed-up)::

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \\
        python benchmarks/bench_compat.py --sizes 256,1024,4096 --rounds 21
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch_dct

import structlin.compat.torch_dct as compat

LIBRARIES = {"torch_dct": torch_dct, "structlin": compat}
ONE_D = ["dct", "idct", "dct1", "idct1", "LinearDCT"]
TWO_D = ["dct_2d", "idct_2d", "apply_linear_2d"]
THREE_D = ["dct_3d", "idct_3d", "apply_linear_3d"]
FUNCTIONS = ONE_D + TWO_D + THREE_D
#: the largest N each function is measured at (memory, or torch-dct's dense matrix products)
MAX_N = {"LinearDCT": 4096, "apply_linear_2d": 1024, "dct_2d": 4096, "idct_2d": 4096, "dct_3d": 256,
         "idct_3d": 256, "apply_linear_3d": 256}


def shape(name: str, n: int, batch: int, smoke: bool = False) -> tuple:
    """The input shape of ``name`` at size ``n`` (see the module docstring)."""
    if name in TWO_D:
        return (4 if smoke else max(1, 2**22 // (n * n)), n, n)
    if name in THREE_D:
        side = 32 if smoke else n
        return (side, side, side)
    return (batch, n)


@functools.lru_cache(maxsize=16)
def _layer(library: str, n: int, device: str):
    return LIBRARIES[library].LinearDCT(n, "dct").to(device)


def call(library: str, name: str, n: int, device: str = "cpu"):
    """``f(x)``: ``name`` of ``library`` (with that library's ``LinearDCT(n, "dct")`` where it takes a layer)."""
    module = LIBRARIES[library]
    if name == "LinearDCT":
        return _layer(library, n, device)
    if name.startswith("apply_linear"):
        return functools.partial(getattr(module, name), linear_layer=_layer(library, n, device))
    return getattr(module, name)


def forward_backward(fn, x):
    """A step running ``fn(x)`` and its backward (``x`` needs its gradient, the loss is ``y.sum()``)."""
    x = x.detach().requires_grad_(True)

    def step():
        x.grad = None
        y = fn(x)
        y.backward(torch.ones_like(y))

    return step


@pytest.fixture
def smoke(request):
    return bool(request.config.getoption("benchmark_disable", False))


def _skip_beyond_max(name: str, n: int) -> None:
    if n > MAX_N.get(name, n):
        pytest.skip(f"{name} is measured up to N = {MAX_N[name]} (memory or torch-dct's dense matrix products)")


@pytest.mark.parametrize("library", list(LIBRARIES))
@pytest.mark.parametrize("name", FUNCTIONS)
def test_compat_forward(timed, name, library, n, batch, bench_device, smoke):
    _skip_beyond_max(name, n)
    torch.manual_seed(0)
    x = torch.randn(shape(name, n, batch, smoke), device=bench_device)
    fn = call(library, name, x.shape[-1], str(bench_device))
    with torch.no_grad():
        timed(f"compat {name} forward N={n}", lambda: fn(x))


@pytest.mark.parametrize("library", list(LIBRARIES))
@pytest.mark.parametrize("name", FUNCTIONS)
def test_compat_forward_backward(timed, name, library, n, batch, bench_device, smoke):
    _skip_beyond_max(name, n)
    torch.manual_seed(0)
    x = torch.randn(shape(name, n, batch, smoke), device=bench_device)
    fn = call(library, name, x.shape[-1], str(bench_device))
    timed(f"compat {name} forward+backward N={n}", forward_backward(fn, x))


def interleaved_ratios(names: list[str], sizes: list[int], batch: int, rounds: int, device: str = "cpu") -> list[dict]:
    """For each function, size and mode: median times of both libraries and the median of the per-round ratios
    ``time(torch_dct) / time(structlin)``, the two calls alternating (their order swapped every round)."""
    import statistics
    import time

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    results = []
    for name in names:
        for n in sizes:
            if n > MAX_N.get(name, n):
                continue
            torch.manual_seed(0)
            x = torch.randn(shape(name, n, batch), device=device)
            for mode in ("forward", "forward+backward"):
                steps = []
                for library in LIBRARIES:
                    fn = call(library, name, n, device)
                    steps.append(forward_backward(fn, x) if mode == "forward+backward" else
                                 (lambda fn=fn: fn(x)))
                times: list[list[float]] = [[], []]
                with torch.set_grad_enabled(mode != "forward"):
                    for step in steps:  # warm-up
                        step()
                    for r in range(rounds):
                        for i in (0, 1) if r % 2 == 0 else (1, 0):
                            sync()
                            start = time.perf_counter()
                            steps[i]()
                            sync()
                            times[i].append(time.perf_counter() - start)
                ratios = [a / b for a, b in zip(*times)]
                results.append({"function": name, "mode": mode, "n": n, "shape": list(x.shape),
                                "torch_dct_ms": 1e3 * statistics.median(times[0]),
                                "structlin_ms": 1e3 * statistics.median(times[1]),
                                "speedup": statistics.median(ratios), "speedup_min": min(ratios),
                                "speedup_max": max(ratios)})
                print(_row(results[-1]), flush=True)
            _layer.cache_clear()
    return results


def _row(r: dict) -> str:
    mark = "" if r["speedup"] >= 2 else " **below 2×**"
    return (f"| {r['function']} | {r['mode']} | {r['n']} | {tuple(r['shape'])} | {r['torch_dct_ms']:.3f} | "
            f"{r['structlin_ms']:.3f} | {r['speedup']:.2f}×{mark} | {r['speedup_min']:.2f}–{r['speedup_max']:.2f} |")


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description="torch-dct vs structlin.compat.torch_dct, alternating calls")
    parser.add_argument("--sizes", default="256,1024,4096")
    parser.add_argument("--functions", default=",".join(FUNCTIONS))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"<!-- torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}, float32, "
          f"{args.rounds} rounds; speed-up = median of per-round time(torch_dct) / time(structlin) -->")
    print("| function | mode | N | shape | torch_dct (ms) | structlin (ms) | speed-up | min–max |")
    print("|---|---|---:|---|---:|---:|---:|---|")
    results = interleaved_ratios(args.functions.split(","), [int(s) for s in args.sizes.split(",")], args.batch,
                                 args.rounds, args.device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": torch.get_num_threads(), "rounds": args.rounds, "results": results}, f, indent=2)

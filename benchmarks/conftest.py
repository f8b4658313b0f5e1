"""Options shared by the benchmark suites: sizes, batch and device.

Run with ``pytest benchmarks``; pass ``--benchmark-json out.json`` and ``python benchmarks/summarize.py out.json``
for the ratio table kept in ``docs/benchmarks.md``. The test command collects them with ``--benchmark-disable``,
which runs every benchmark once, at N = 256, as a smoke test.
"""

import pytest
import torch


def pytest_addoption(parser):
    group = parser.getgroup("structlin benchmarks")
    group.addoption(
        "--sizes",
        default=None,
        help="comma-separated sizes N (default 256,1024,4096,16384; 256 alone with --benchmark-disable)",
    )
    group.addoption("--batch", type=int, default=128, help="rows per call")
    group.addoption("--device", default="cpu", help="cpu or cuda")


def pytest_generate_tests(metafunc):
    if "n" in metafunc.fixturenames:
        config = metafunc.config
        default = "256" if config.getoption("benchmark_disable", False) else "256,1024,4096,16384"
        sizes = [int(s) for s in (config.getoption("--sizes") or default).split(",")]
        metafunc.parametrize("n", sizes)


@pytest.fixture(scope="session")
def batch(request):
    return request.config.getoption("--batch")


@pytest.fixture(scope="session")
def bench_device(request):
    device = torch.device(request.config.getoption("--device"))
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda given but CUDA is not available")
    return device


@pytest.fixture
def x(n, batch, bench_device):
    """A float32 ``(batch, n)`` input, the same for every implementation."""
    torch.manual_seed(0)
    return torch.randn(batch, n, device=bench_device)


@pytest.fixture
def timed(benchmark, bench_device):
    """``timed(group, fn)``: benchmark ``fn`` in ``group``, synchronizing CUDA so the time is the kernel's."""

    def run(group, fn):
        benchmark.group = group
        if bench_device.type == "cuda":
            return benchmark(lambda: (fn(), torch.cuda.synchronize()))
        return benchmark(fn)

    return run

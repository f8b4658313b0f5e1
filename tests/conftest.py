import os

import pytest
import torch
from hypothesis import HealthCheck, settings

from structlin.transforms import native_kernels, native_status
from structlin.transforms._backend import uses_native

settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("dev", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")),
]


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(params=["native", "torch"])
def backend(request):
    """Run the test once with the native CPU kernels and once with the pure-PyTorch path."""
    if request.param == "native" and not uses_native(torch.empty(1)):
        pytest.skip(f"native kernels unavailable: {native_status()}")
    with native_kernels(request.param == "native"):
        yield request.param

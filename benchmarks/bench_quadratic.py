"""Speed of quadratic layers against ``nn.Linear`` and against each other (float32, batch 128 by default).

Group ``quadratic forward+backward N=…`` (square layers, N → N):

* ``xu-dense``: ``Quadratic(N, N, form="xu", branch="dense")``: one matmul over three concatenated weights;
* ``nn.Linear(N,3N)``: the same matmul as a plain ``nn.Linear`` (the reference for ``xu-dense``);
* ``nn.Linear(N,N)``: a plain linear layer of the same shape;
* ``fan-dense``, ``lowrank-dense`` (rank N/8): the other forms with dense branches;
* ``xu-acdc-depth4``: ``Quadratic(N, N, form="xu", branch="acdc", depth=4)`` (reference: ``xu-dense``).

Dense quadratic layers at N = 16384 need several GB and are skipped there.
"""

import pytest
import torch
from torch import nn

from structlin import Quadratic

IMPLS = {
    "xu-dense": lambda n: Quadratic(n, n, form="xu", branch="dense"),
    "nn.Linear(N,3N)": lambda n: nn.Linear(n, 3 * n),
    "nn.Linear(N,N)": lambda n: nn.Linear(n, n),
    "fan-dense": lambda n: Quadratic(n, n, form="fan", branch="dense"),
    "lowrank-dense": lambda n: Quadratic(n, n, form="lowrank", rank=max(1, n // 8), branch="dense"),
    "xu-acdc-depth4": lambda n: Quadratic(n, n, form="xu", branch="acdc", depth=4),
}
DENSE = {"xu-dense", "nn.Linear(N,3N)", "fan-dense", "lowrank-dense"}


@pytest.mark.parametrize("impl", list(IMPLS))
def test_quadratic_forward_backward(timed, impl, n, batch, bench_device):
    if impl in DENSE and n > 4096:
        pytest.skip("dense quadratic weights at this size need several GB")
    torch.manual_seed(0)
    module = IMPLS[impl](n).to(bench_device)
    x = torch.randn(batch, n, device=bench_device, requires_grad=True)

    def step():
        for p in module.parameters():
            p.grad = None
        x.grad = None
        module(x).sum().backward()

    timed(f"quadratic forward+backward N={n}", step)

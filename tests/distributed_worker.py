"""Worker processes for tests/test_distributed.py (a module of its own, so that spawned processes can import it)."""

import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from structlin import StructuredLayer

BATCH, FEATURES, CLASSES = 8, 12, 3


def build_model(kind: str, options: dict) -> nn.Module:
    """A small classifier whose hidden layer is ``kind``; the same seed gives the same model in every process."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(FEATURES, 16, dtype=torch.float64),
        nn.ReLU(),
        StructuredLayer.create(kind, 16, 16, dtype=torch.float64, **options),
        nn.ReLU(),
        nn.Linear(16, CLASSES, dtype=torch.float64),
    )


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, FEATURES, dtype=torch.float64, generator=generator)
    return x, torch.randint(0, CLASSES, (BATCH,), generator=generator)


def one_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


def _wrap(model: nn.Module, strategy: str) -> nn.Module:
    if strategy == "ddp":
        return nn.parallel.DistributedDataParallel(model)
    from torch.distributed.fsdp import fully_shard

    for module in model:
        if any(p.requires_grad for p in module.parameters()):
            fully_shard(module)
    return fully_shard(model)


def _full_state(model: nn.Module) -> dict:
    state = {}
    for name, value in model.state_dict().items():
        full = value.full_tensor() if hasattr(value, "full_tensor") else value
        state[name.removeprefix("module.")] = full.detach().clone()
    return state


def run(rank: int, world_size: int, init_file: str, strategy: str, cases: list, out_file: str) -> None:
    """Each process trains on its half of the batch; rank 0 saves the parameters after one step, per case."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        x, y = batch()
        shard = slice(rank * BATCH // world_size, (rank + 1) * BATCH // world_size)
        results = {}
        for case_id, kind, options in cases:
            model = _wrap(build_model(kind, options), strategy)
            one_step(model, x[shard], y[shard])
            results[case_id] = _full_state(model)
        if rank == 0:
            torch.save(results, out_file)
    finally:
        dist.destroy_process_group()
    # After a clean run, torch's distributed stack sometimes aborts during interpreter teardown ("terminate called
    # without an active exception", about one run in 25 here, with or without structlin's native kernels). The
    # work is done and saved, so leave without the teardown. An exception above still propagates to mp.spawn.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

"""Data-parallel training (DDP, FSDP2) over the gloo backend on 2 local processes matches one process on the batch."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import distributed_worker as worker
from layer_cases import OPTIONS

import structlin


def _cases():
    cases = []
    for kind in structlin.available_layers():
        options = OPTIONS.get(kind, [({}, None)])[0][0]
        resolved = {k: (v(16, 16) if callable(v) else v) for k, v in options.items()}
        cases.append((kind, kind, resolved))
    return cases


def _single_process_states(cases):
    x, y = worker.batch()
    states = {}
    for case_id, kind, options in cases:
        model = worker.build_model(kind, options)
        worker.one_step(model, x, y)
        states[case_id] = {name: value.detach() for name, value in model.state_dict().items()}
    return states


def _fsdp_unavailable() -> str | None:
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError as error:
        return f"this torch has no FSDP2 (torch.distributed.fsdp.fully_shard): {error}"
    return None


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is not available")
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_one_step_on_two_processes_equals_one_process_on_the_whole_batch(strategy, tmp_path):
    if strategy == "fsdp" and (reason := _fsdp_unavailable()):
        pytest.skip(reason)
    cases = _cases()
    out_file = tmp_path / "states.pt"
    mp.spawn(worker.run, args=(2, str(tmp_path / "init"), strategy, cases, str(out_file)), nprocs=2, join=True)
    distributed = torch.load(out_file, weights_only=True)
    expected = _single_process_states(cases)
    assert set(distributed) == {case_id for case_id, _, _ in cases}
    for case_id, state in expected.items():
        assert state.keys() == distributed[case_id].keys(), case_id
        for name, value in state.items():
            # gradients are averaged across processes, so the result agrees to rounding, not bit for bit
            torch.testing.assert_close(distributed[case_id][name], value, rtol=1e-12, atol=1e-12, msg=f"{case_id}: {name}")
        initial = worker.build_model(*[c for c in cases if c[0] == case_id][0][1:]).state_dict()
        assert any(not torch.equal(initial[name], value) for name, value in state.items()), "the step changed nothing"

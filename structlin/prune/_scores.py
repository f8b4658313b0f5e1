"""Usefulness scores of hidden units: ``SCORES`` maps a name to a function giving one score tensor per pair.

A score function is called as ``score(context)`` with a :class:`ScoreContext` and returns, for each pair, a
float64 tensor of ``units`` non-negative scores (higher = more useful). Register your own with
``SCORES.register("name")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from ..registry import Registry
from ._data import Split, batches
from ._pairs import Pair, masked

__all__ = ["SCORES", "ScoreContext", "taylor_score", "magnitude_score"]


@dataclass
class ScoreContext:
    """What a score may use: the model, its pairs and current masks (removed units are 0), the training split,
    the loss, a tensor whose dtype/device the data must take (``like``), and how many batches to read."""

    model: nn.Module
    pairs: Sequence[Pair]
    masks: Sequence[torch.Tensor]
    train: Split
    loss_fn: Callable
    like: torch.Tensor
    max_batches: int


ScoreFn = Callable[[ScoreContext], list]
SCORES: Registry[ScoreFn] = Registry("unit score")


@SCORES.register("taylor")
def taylor_score(ctx: ScoreContext) -> list[torch.Tensor]:
    """First-order estimate of the loss increase when a unit is removed, ``E_x |h_j(x) · ∂L/∂h_j(x)|``.

    ``h_j(x)`` is unit ``j``'s activation (the input of the pair's second Linear) on row ``x``; ``∂L/∂h_j`` is
    the gradient of ``loss_fn`` on the batch. Removing the unit sets ``h_j`` to 0, which changes the loss by
    ``−h_j · ∂L/∂h_j`` to first order; the absolute value per row, averaged over up to ``max_batches`` training
    batches, is the score. It costs one forward and backward pass per batch for all units at once. A unit whose
    outgoing weights are all zero has ``∂L/∂h_j = 0`` and scores 0; so does a unit that is 0 on every row.
    """
    totals = [torch.zeros(p.units, dtype=torch.float64, device=ctx.like.device) for p in ctx.pairs]
    rows = 0
    was_training = ctx.model.training
    ctx.model.eval()
    try:
        for index, (x, y) in enumerate(batches(ctx.train, ctx.like)):
            if index >= ctx.max_batches:
                break
            with torch.enable_grad(), masked(ctx.model, ctx.pairs, ctx.masks, probes=True) as m:
                loss = ctx.loss_fn(ctx.model(x), y)
                records = [r for per_pair in m.records for r in per_pair]
                grads = torch.autograd.grad(loss, [probe for _, probe in records], allow_unused=True)
            grads = iter(grads)
            for i, per_pair in enumerate(m.records):
                for hidden, _ in per_pair:
                    g = next(grads)
                    if g is not None:
                        contribution = (hidden * g).abs().reshape(-1, hidden.shape[-1])
                        totals[i] += contribution.double().sum(0)
            rows += len(x)
    finally:
        ctx.model.train(was_training)
    if rows == 0:
        raise ValueError("the training data yields no batches to score units on")
    return [t / rows for t in totals]


@SCORES.register("magnitude")
def magnitude_score(ctx: ScoreContext) -> list[torch.Tensor]:
    """Data-free: ``‖[W₁[j, :], b₁[j]]‖₂ · ‖W₂[:, j]‖₂``, the size of the unit's incoming and outgoing weights.

    Zero for a unit whose outgoing weights are all zero. It ignores the data, so it ranks units that never fire
    by their weights alone; ``"taylor"`` is the better default.
    """
    modules = dict(ctx.model.named_modules())
    scores = []
    for p in ctx.pairs:
        first, second = modules[p.first], modules[p.second]
        incoming = first.weight.detach().double()
        if first.bias is not None:
            incoming = torch.cat([incoming, first.bias.detach().double()[:, None]], 1)
        outgoing = second.weight.detach().double()
        scores.append(incoming.norm(dim=1) * outgoing.norm(dim=0))
    return scores

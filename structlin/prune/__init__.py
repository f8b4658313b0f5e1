"""Prune and rebuild dense feed-forward networks (ODF2NNA): keep the useful hidden units, rebuild smaller Linears.

:func:`shrink` scores each hidden unit between two ``nn.Linear`` layers, removes the least useful ones while the
validation metric stays within a tolerance of the original, rebuilds smaller ``nn.Linear`` layers holding the
kept rows and columns, and fine-tunes. Guide and figures: ``docs/prune.md``.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Sequence, Union

import torch
from torch import nn

from ..report import report
from ._data import Split, batches, check_split, default_loss, default_metric, evaluate, finetune
from ._pairs import Pair, find_pairs, masked, rebuild, resolve_pairs
from ._result import PrunedPair, ShrinkResult
from ._scores import SCORES, ScoreContext, magnitude_score, taylor_score

__all__ = [
    "shrink",
    "ShrinkResult",
    "PrunedPair",
    "Pair",
    "find_pairs",
    "SCORES",
    "ScoreContext",
    "taylor_score",
    "magnitude_score",
    "default_metric",
    "default_loss",
]


def shrink(
    model: nn.Module,
    data,
    *,
    tolerance: float = 0.01,
    relative: bool = True,
    metric: Callable[[torch.Tensor, torch.Tensor], float] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
    score: Union[str, Callable[[ScoreContext], list]] = "taylor",
    rounds: int = 20,
    min_units: int = 1,
    score_batches: int = 8,
    finetune_steps: int = 200,
    round_steps: int = 50,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    inplace: bool = False,
) -> ShrinkResult:
    """Remove the least useful hidden units of ``model`` within a tolerance, rebuild smaller Linears, fine-tune.

    Hidden units live between the two Linears of a *pair* (``nn.Linear`` → elementwise activation →
    ``nn.Linear``). ``pairs=None`` finds them in every ``nn.Sequential`` of the model
    (:func:`find_pairs`); for other models (an MLP block whose ``forward`` calls ``fc1``, an activation and
    ``fc2``) list them: ``pairs=[("blocks.0.mlp.fc1", "blocks.0.mlp.fc2"), ...]``. The hidden units must feed
    the second Linear only.

    The search, on a copy of the model (``model`` itself if ``inplace``), in eval mode:

    1. ``m₀ = metric`` on the validation data; the threshold is ``m₀ − tolerance·|m₀|`` (``relative=True``) or
       ``m₀ − tolerance``. Units whose outgoing weights are all zero are removed first (they change nothing).
    2. Each round scores the remaining units (``score``: ``"taylor"``, the default, estimates the loss increase
       of removing each unit from training batches; ``"magnitude"`` uses weights only; see ``SCORES``), orders
       all units of all pairs by score, and finds by binary search the largest ``k`` such that removing the
       ``k`` lowest keeps the validation metric ``>= threshold`` (every tested ``k`` is a real validation pass;
       only a tested ``k`` is accepted). With ``round_steps``, the masked model is then fine-tuned for that many
       steps (kept only if it still meets the threshold), which lets later rounds remove more. Rounds repeat,
       rescoring, until one removes nothing or ``rounds`` ran.
    3. The model is rebuilt: each pair's Linears become ``nn.Linear(in, k)`` / ``nn.Linear(k, out)`` with the
       kept rows (weight and bias) and columns (the second bias unchanged); this computes exactly what the
       masked model computes (the original, unless ``round_steps`` fine-tuned it).
    4. ``finetune_steps`` Adam steps (``lr``) on ``loss_fn`` over shuffled training batches. If the fine-tuned
       model scores below the rebuilt one on the validation data, the rebuilt weights are kept instead, so the
       returned model always meets the threshold on the validation data.

    Args:
        model: the network to shrink; never changed unless ``inplace=True``. Dtype and device are kept.
        data: ``(train, val)``; each an ``(x, y)`` pair of tensors (served in batches of ``batch_size`` rows) or
            a re-iterable of ``(x, y)`` batches such as a ``DataLoader``. Scores and fine-tuning use ``train``;
            the metric and every accept/reject decision use ``val``.
        tolerance: how far the validation metric may fall, ``>= 0`` (relative to ``|m₀|`` by default).
        relative: whether ``tolerance`` is a fraction of ``|m₀|`` (``True``) or in the metric's units.
        metric: ``metric(outputs, targets) -> float``, higher is better, on the whole validation set at once.
            Default: accuracy (argmax of the last dimension) for integer targets, else minus the mean squared error.
        loss_fn: ``loss_fn(outputs, targets) -> scalar`` for scores and fine-tuning. Default: cross-entropy for
            integer targets, else mean squared error.
        pairs: explicit ``(first, second)`` qualified names of Linear pairs, or ``None`` to find them.
        score: a name in ``SCORES`` or a function ``score(ScoreContext) -> [tensor of units scores per pair]``.
        rounds: most scoring rounds; min_units: units every pair keeps (even units with zero outgoing weights).
        score_batches: training batches each scoring round reads.
        finetune_steps: fine-tuning steps after the rebuild (0: none); round_steps: fine-tuning steps after each
            round that removed units (0: none); lr: the Adam learning rate of both; batch_size: rows per batch
            for tensor data; seed: the fine-tuning shuffle's seed.
        inplace: rebuild ``model`` itself (its Linears are replaced) instead of a deep copy.

    Returns:
        a :class:`ShrinkResult`: ``.model``, ``.layers`` (units kept per pair), metrics before/after pruning
        and fine-tuning, ``report_before``/``report_after`` (parameters, FLOPs via :func:`structlin.report`).
    """
    pair_list = resolve_pairs(model, pairs)
    _check_number("tolerance", tolerance, minimum=0.0)
    integers = {"rounds": (rounds, 1), "min_units": (min_units, 1), "score_batches": (score_batches, 1),
                "finetune_steps": (finetune_steps, 0), "round_steps": (round_steps, 0), "batch_size": (batch_size, 1)}
    for name, (value, minimum) in integers.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    _check_number("lr", lr, minimum=0.0)
    score_fn = SCORES.get(score) if isinstance(score, str) else score
    if not callable(score_fn):
        raise TypeError(f"score must be a name in {SCORES.names()} or a callable, got {score!r}")
    score_name = score if isinstance(score, str) else getattr(score, "__name__", "custom")
    train_data, val_data = check_split(data)
    train, val = Split(train_data, "train", batch_size), Split(val_data, "val", batch_size)
    metric = metric or default_metric
    loss_fn = loss_fn or default_loss

    work = model if inplace else copy.deepcopy(model)
    modules = dict(work.named_modules())
    like = modules[pair_list[0].first].weight
    was_training = work.training
    work.eval()
    try:
        example = next(iter(_first_inputs(val, like)))
        report_before = report(work, example)
        metric_before = evaluate(work, val, metric, like)
        if not math.isfinite(metric_before):
            raise ValueError(f"the validation metric of the input model is {metric_before}")
        threshold = metric_before - tolerance * (abs(metric_before) if relative else 1.0)

        masks, zero_outgoing = _zero_outgoing_masks(modules, pair_list, min_units, like)
        search = _Search(work, pair_list, val, metric, like, threshold)
        done = 0
        for done in range(1, rounds + 1):
            scores = score_fn(ScoreContext(work, pair_list, masks, train, loss_fn, like, score_batches))
            order = _candidates(pair_list, masks, scores, min_units)
            k = search.largest(masks, order)
            if k == 0:
                break
            masks = _remove(masks, order[:k])
            if round_steps:
                _finetune_masked(work, pair_list, masks, search, train, loss_fn, round_steps, lr, seed + done, like)

        keep = [torch.nonzero(m, as_tuple=True)[0] for m in masks]
        rebuild(work, pair_list, keep)
        metric_pruned = evaluate(work, val, metric, like)
        metric_finetuned, kept_finetune, losses = None, False, []
        if finetune_steps:
            saved = copy.deepcopy(work.state_dict())
            losses = finetune(work, train, loss_fn, steps=finetune_steps, lr=lr, seed=seed, like=like)
            work.eval()
            metric_finetuned = evaluate(work, val, metric, like)
            kept_finetune = metric_finetuned >= metric_pruned
            if not kept_finetune:
                work.load_state_dict(saved)
        metric_after = metric_finetuned if kept_finetune else metric_pruned
        report_after = report(work, example)
    finally:
        work.train(was_training)
    layers = [PrunedPair(p.first, p.second, p.units, len(k), z, k.tolist())
              for p, k, z in zip(pair_list, keep, zero_outgoing)]
    return ShrinkResult(
        model=work, layers=layers, metric_before=metric_before, threshold=threshold, metric_pruned=metric_pruned,
        metric_finetuned=metric_finetuned, finetune_kept=kept_finetune, metric_after=metric_after,
        tolerance=float(tolerance), relative=relative, score=score_name, rounds=done, evaluations=search.calls,
        finetune_losses=losses, report_before=report_before, report_after=report_after,
        example_rows=int(example.shape[0]) if example.dim() else 1,
    )


def _finetune_masked(work, pairs, masks, search, train, loss_fn, steps, lr, seed, like) -> None:
    """Fine-tune with the removed units masked (their weights get zero gradients and stay as they are); keep the
    result only if it still meets the threshold on the validation data."""
    saved = copy.deepcopy(work.state_dict())
    with masked(work, pairs, masks):
        finetune(work, train, loss_fn, steps=steps, lr=lr, seed=seed, like=like)
    work.eval()
    if search.value(masks) < search.threshold:
        work.load_state_dict(saved)


def _check_number(name: str, value, *, minimum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum}, got {value!r}")


def _first_inputs(split: Split, like: torch.Tensor):
    for x, _ in batches(split, like):
        yield x
        return
    raise ValueError("the validation data yields no batches")


def _zero_outgoing_masks(modules, pairs: Sequence[Pair], min_units: int, like: torch.Tensor):
    """Masks with every unit whose outgoing weights are all zero removed (each pair keeping ``min_units``)."""
    masks, counts = [], []
    for p in pairs:
        mask = torch.ones(p.units, dtype=like.dtype, device=like.device)
        zero = torch.nonzero((modules[p.second].weight.detach() == 0).all(0), as_tuple=True)[0]
        removable = max(0, min(len(zero), p.units - min_units))
        mask[zero[:removable]] = 0
        masks.append(mask)
        counts.append(removable)
    return masks, counts


def _candidates(pairs, masks, scores, min_units: int) -> list[tuple[int, int]]:
    """Remaining units ``(pair, unit)`` from least to most useful, leaving every pair ``min_units``."""
    entries = []
    for i, (p, mask, s) in enumerate(zip(pairs, masks, scores)):
        s = torch.as_tensor(s).detach().double().cpu().reshape(-1)
        if s.numel() != p.units:
            raise ValueError(f"the score for {p.label} has {s.numel()} entries, expected {p.units}")
        for j in torch.nonzero(mask, as_tuple=True)[0].tolist():
            entries.append((float(s[j]), i, j))
    entries.sort()
    left = [int(m.sum()) for m in masks]
    order = []
    for _, i, j in entries:
        if left[i] > min_units:
            left[i] -= 1
            order.append((i, j))
    return order


def _remove(masks, units) -> list[torch.Tensor]:
    masks = [m.clone() for m in masks]
    for i, j in units:
        masks[i][j] = 0
    return masks


class _Search:
    """Validation passes with units masked: the largest prefix of an ordered candidate list that keeps the metric
    at or above the threshold, by binary search."""

    def __init__(self, model, pairs, val, metric, like, threshold):
        self.model, self.pairs, self.val, self.metric, self.like = model, pairs, val, metric, like
        self.threshold = threshold
        self.calls = 0

    def value(self, masks) -> float:
        self.calls += 1
        with masked(self.model, self.pairs, masks):
            return evaluate(self.model, self.val, self.metric, self.like)

    def largest(self, masks, order) -> int:
        lo, hi = 0, len(order)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.value(_remove(masks, order[:mid])) >= self.threshold:
                lo = mid
            else:
                hi = mid - 1
        return lo

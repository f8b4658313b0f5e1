"""Data splits, the default metric and loss, evaluation and fine-tuning for :func:`structlin.prune.shrink`.

A *split* is either a pair ``(x, y)`` of tensors with the same first dimension (served in mini-batches of
``batch_size`` rows) or an iterable of ``(x, y)`` batches that can be iterated more than once (a
``torch.utils.data.DataLoader``). Batches are moved to the model's device; ``x`` is cast to its floating dtype.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Split", "check_split", "batches", "default_metric", "default_loss", "evaluate", "finetune"]

Metric = Callable[[torch.Tensor, torch.Tensor], float]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Split:
    """One split of the data, served as ``(x, y)`` batches on a device."""

    def __init__(self, data, name: str, batch_size: int):
        self.name, self.batch_size = name, batch_size
        self.tensors = _as_tensors(data)
        if self.tensors is None:
            if isinstance(data, torch.Tensor) or not hasattr(data, "__iter__"):
                raise TypeError(f"the {name} data must be an (x, y) pair of tensors or an iterable of (x, y) "
                                f"batches (a DataLoader), got {type(data).__name__}")
            if iter(data) is data:
                raise TypeError(f"the {name} data is an iterator, which can be read only once; give a list of "
                                "batches or a DataLoader")
        self.data = data

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.tensors is not None:
            x, y = self.tensors
            for start in range(0, len(x), self.batch_size):
                yield x[start:start + self.batch_size], y[start:start + self.batch_size]
            return
        for batch in self.data:
            pair = _as_tensors(batch)
            if pair is None:
                raise TypeError(f"each batch of the {self.name} data must be an (x, y) pair of tensors, "
                                f"got {type(batch).__name__}")
            yield pair

    def random_batches(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless shuffled mini-batches (tensors: a fresh permutation per epoch; loaders: their own order)."""
        while True:
            if self.tensors is not None:
                x, y = self.tensors
                order = torch.randperm(len(x), generator=generator)
                for start in range(0, len(x), self.batch_size):
                    index = order[start:start + self.batch_size].to(x.device)
                    yield x[index], y[index]
            else:
                empty = True
                for batch in self:
                    empty = False
                    yield batch
                if empty:
                    raise ValueError(f"the {self.name} data yields no batches")


def _as_tensors(data):
    if (isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor)
            and isinstance(data[1], torch.Tensor)):
        if len(data[0]) != len(data[1]):
            raise ValueError(f"x and y have different lengths: {len(data[0])} and {len(data[1])}")
        if len(data[0]) == 0:
            raise ValueError("x and y are empty")
        return data[0], data[1]
    return None


def check_split(data) -> tuple:
    """``data`` must be ``(train, val)``."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError("data must be a (train, val) pair; each is an (x, y) pair of tensors or an iterable of "
                        f"(x, y) batches; got {type(data).__name__}")
    return tuple(data)


def _to(x: torch.Tensor, y: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.to(like.device)
    if x.is_floating_point():
        x = x.to(like.dtype)
    return x, y.to(like.device)


def batches(split: Split, like: torch.Tensor):
    for x, y in split:
        yield _to(x, y, like)


def _classification(y: torch.Tensor) -> bool:
    return not (y.is_floating_point() or y.is_complex())


def default_metric(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Accuracy (argmax of the last dimension) for integer targets, else minus the mean squared error."""
    if _classification(targets):
        return float((outputs.argmax(-1) == targets).double().mean())
    return -float(F.mse_loss(outputs.double(), targets.double().reshape(outputs.shape)))


def default_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (classes on the last dimension) for integer targets, else the mean squared error."""
    if _classification(targets):
        return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1))
    return F.mse_loss(outputs, targets.to(outputs.dtype).reshape(outputs.shape))


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, metric: Metric, like: torch.Tensor) -> float:
    """``metric`` of the model's outputs on the whole split at once (all batches concatenated), in eval mode."""
    outputs, targets = [], []
    for x, y in batches(split, like):
        outputs.append(model(x))
        targets.append(y)
    if not outputs:
        raise ValueError(f"the {split.name} data yields no batches")
    return float(metric(torch.cat(outputs), torch.cat(targets)))


def finetune(model: nn.Module, split: Split, loss_fn: Loss, *, steps: int, lr: float, seed: int,
             like: torch.Tensor) -> list[float]:
    """``steps`` Adam steps on ``loss_fn`` over shuffled training batches; returns the loss of each step."""
    params = [p for p in model.parameters() if p.requires_grad]
    if steps == 0 or not params:
        return []
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(params, lr=lr)
    losses = []
    model.train()
    stream = split.random_batches(generator)
    for _ in range(steps):
        x, y = _to(*next(stream), like)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses

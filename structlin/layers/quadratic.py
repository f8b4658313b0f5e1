"""Factorized quadratic layers (Xu; Fan; QuadraNet V2) whose linear parts are dense or any structured kind."""

from __future__ import annotations

import torch
from torch import nn

from ..costs import Cost
from ..strategies.quadratic_init import QuadraticInit, resolve_quadratic_init
from ._checks import check_compute_dtype, check_rank
from .base import StructuredLayer, register_layer
from .branches import Part, branch_needs_rank, make_branch
from .quadratic_forms import QuadraticForm, resolve_form
from .quadratic_parts import QuadraticParts

__all__ = ["Quadratic"]


@register_layer("quadratic")
class Quadratic(QuadraticParts, StructuredLayer):
    r"""A layer of factorized quadratic neurons.

    Forms (``⊙`` is the elementwise product; every ``W`` maps to ``out_features`` unless said otherwise):

    * ``"xu"``: ``y = (W_a x + b_a) ⊙ (W_b x + b_b) + W_c x + b_c``;
    * ``"fan"``: ``y = (W_r x + b_r) ⊙ (W_g x + b_g) + W_b (x ⊙ x) + c``;
    * ``"lowrank"`` (QuadraNet V2): ``y = W x + b + P((U x) ⊙ (V x))`` with ``U, V`` ``(rank, in)`` and ``P``
      ``(out, rank)``.

    Each linear part is a *branch* of kind ``branch``: ``"dense"`` (the parts that read the same input are one
    matmul over their concatenated weights) or any registered layer kind (``"acdc"``, ``"lowrank"``, …; one layer
    per part, as ``scale ⊙ layer(x) + bias``, see :mod:`structlin.layers.branches`). ``branch_options`` go to
    each structured layer (e.g. ``depth=4`` for ACDC).

    Args:
        in_features, out_features: sizes of the last dimension of input and output.
        form: ``"xu"``, ``"fan"``, ``"lowrank"`` or a registered :class:`QuadraticForm`.
        branch: kind of every linear part.
        rank: rank of the ``lowrank`` form's quadratic term and of ``"lowrank"`` branches (required for either).
        bias: ``False`` gives the layer no constant term (``y(0) = 0`` whatever the parameters, as for
            ``nn.Linear(bias=False)``): it drops every bias except those the form cannot do without, the biases of
            parts that start at a non-zero constant (xu's ``b_b`` and fan's ``b_g``: the second factor of the
            product starts at 1). xu becomes ``(W_a x) ⊙ (W_b x + b_b) + W_c x``, fan
            ``(W_r x) ⊙ (W_g x + b_g) + W_b (x ⊙ x)``, lowrank ``W x + P((U x) ⊙ (V x))``.
        init: ``"linear-start"`` (default: an exactly linear map at start, every parameter trainable),
            ``"random"``, or a :class:`~structlin.strategies.quadratic_init.QuadraticInit`.
        linear_branch: kind of the first-order part (``a`` for xu, ``r`` for fan, ``W`` for lowrank). By default
            it is ``branch`` and shares its group's matmul; when given, that part is computed on its own (group
            ``x_first_order``). :meth:`from_linear` sets ``"dense"``: any weight fits it, and its own ``F.linear``
            reproduces ``nn.Linear`` bit for bit.
        device, dtype: of every part; dtype float16, bfloat16, float32 or float64 (``TypeError`` otherwise).
            ``device="meta"`` builds without data; after ``to_empty()``, a seeded ``reset_parameters()`` gives
            the layer built normally with that seed.

    Shape:
        input ``(..., in_features)`` → output ``(..., out_features)``.

    Parameters live in ``branches[<group>]``, one group per input (``x``, ``x_x`` for ``x ⊙ x``, ``u_v`` for
    ``(U x) ⊙ (V x)``): e.g. ``branches.x.weight_a`` for a dense branch, ``branches.x.parts_.a.layer.A`` for ACDC.
    The layer is not a linear map: :meth:`to_dense` raises; :meth:`part_dense` gives each part's weight.
    """

    exact_from_linear = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        form: str | QuadraticForm = "fan",
        branch: str = "dense",
        rank: int | None = None,
        bias: bool = True,
        init: str | QuadraticInit = "linear-start",
        linear_branch: str | None = None,
        device=None,
        dtype=None,
        **branch_options,
    ):
        super().__init__(in_features, out_features)
        self.factory_kwargs(device, dtype)
        self.form = resolve_form(form)
        self.init = resolve_quadratic_init(init)
        self.branch = branch
        self.linear_branch = branch if linear_branch is None else linear_branch
        separate_first = linear_branch is not None
        kinds = {spec.name: (self.linear_branch if spec.first_order else branch) for spec in self.form.parts}
        needs_rank = self.form.needs_rank or any(branch_needs_rank(k) for k in set(kinds.values()))
        if needs_rank and rank is None:
            users = ([f"form={self.form.name!r}"] if self.form.needs_rank else []) + [
                f"branch={k!r}" for k in sorted(set(kinds.values())) if branch_needs_rank(k)]
            raise ValueError(f"rank=<positive int> is required for {' and '.join(users)}")
        self.rank = None if rank is None else check_rank(rank)
        self._sizes = sizes = {"in": in_features, "out": out_features, "rank": self.rank}
        groups: dict[str, list[Part]] = {}
        self._group_of: dict[str, str] = {}
        self._group_input: dict[str, str] = {}
        for spec in self.form.parts:
            key = spec.input.replace("*", "_") + ("_first_order" if spec.first_order and separate_first else "")
            has_bias = spec.bias and (bias or spec.needs_bias)
            groups.setdefault(key, []).append(Part(spec.name, sizes[spec.size], has_bias))
            self._group_of[spec.name] = key
            self._group_input[key] = spec.input
        self.branches = nn.ModuleDict()
        for key, parts in groups.items():
            kind = kinds[parts[0].name]
            options = dict(branch_options) if kind == branch else {}
            if branch_needs_rank(kind):
                options["rank"] = self.rank
            in_size = sizes[self.form.inputs[self._group_input[key]]]
            self.branches[key] = make_branch(kind, in_size, parts, device=device, dtype=dtype, **options)
        self.reset_parameters()

    @property
    def _dtype_source(self) -> torch.Tensor:
        return next(self.parameters())

    def reset_parameters(self) -> None:
        """Set every part with the init strategy (structured parts keep their permutations once drawn)."""
        self.prepare_reset()
        self.init.init_(self)

    # ------------------------------------------------------------------------------------------ compute
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_features)`` → ``(..., out_features)``."""
        self._check_input(x)
        compute = self._dtype_source.dtype
        check_compute_dtype(self, x, compute, self._dtype_source.device)
        return self.form.combine(self._run, x.to(compute)).to(x.dtype)

    def cost(self, batch_shape=()) -> Cost:
        """Analytic cost: every branch's cost, the form's elementwise ops, and the sums autograd does of the
        gradients of an input read by ``k > 1`` autograd nodes (``(k − 1)·rows·size``: e.g. fan's ``x`` is read by
        its square and its dense group's matmul, or by each of its structured parts). Conventions: docs/flops.md.
        """
        rows = self._rows(batch_shape)
        itemsize = self._dtype_source.element_size()
        total = self.form.elementwise_cost(rows, self.in_features, self.out_features, self.rank, itemsize)
        for branch in self.branches.values():
            total = total + branch.cost(rows)
        return total + self._gradient_sums({s: rows * self._sizes[size] for s, size in self.form.inputs.items()})

    def to_dense(self) -> torch.Tensor:
        """Raises ``TypeError``: a quadratic layer is not a linear map (see :meth:`part_dense`)."""
        raise TypeError(
            f"Quadratic (form {self.form.name}) is not a linear map, so it has no dense weight; "
            "use part_dense(name) for the weight of one linear part"
        )

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, form: str | QuadraticForm = "fan", branch: str = "dense",
                    rank: int | None = None, **options) -> "Quadratic":
        """A quadratic layer computing exactly ``linear`` (same device and dtype) that trains as ``linear-start``.

        The first-order part is a dense copy of ``linear``'s weight and bias (whatever ``branch`` the other parts
        have: a structured layer cannot hold an arbitrary weight); the other parts take their ``linear-start``
        values, so the quadratic contribution is exactly zero. The layer has ``bias=`` whether ``linear`` has a
        bias: a bias-free ``linear`` gives a layer without a constant term (see ``bias`` in the class docstring).
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"Quadratic.from_linear expects an nn.Linear, got {type(linear).__name__}")
        if "init" in options or "linear_branch" in options:
            raise TypeError("Quadratic.from_linear sets init='linear-start' and linear_branch='dense' itself")
        has_bias = linear.bias is not None
        if options.pop("bias", has_bias) != has_bias:
            raise ValueError("Quadratic.from_linear takes bias from the nn.Linear, which has "
                             f"{'a' if has_bias else 'no'} bias; leave bias out")
        weight = linear.weight.detach()
        layer = cls(linear.in_features, linear.out_features, form=form, branch=branch, rank=rank, bias=has_bias,
                    init="linear-start", linear_branch="dense", device=weight.device, dtype=weight.dtype, **options)
        (first,) = [spec.name for spec in layer.form.parts if spec.first_order]
        layer._branch(first).load_linear(first, weight, linear.bias.detach() if has_bias else None)
        return layer

    def extra_repr(self) -> str:
        rank = f", rank={self.rank}" if self.rank is not None else ""
        linear = f", linear_branch={self.linear_branch!r}" if self.linear_branch != self.branch else ""
        return (f"{super().extra_repr()}, form={self.form.name!r}, branch={self.branch!r}"
                f"{linear}{rank}, init={self.init!r}")

"""Replace the linear layers of any model by a registered structured kind; undo it; rebuild it from a plan.

- :func:`swap` replaces ``nn.Linear``, Hugging Face's ``Conv1D`` and any type registered with
  :func:`register_linear_adapter` (and ``nn.Conv1d/2d/3d`` for a kind with convolutional layers,
  :mod:`structlin.swap._convs`), chosen by name patterns (:mod:`structlin.swap._select`), each started as
  ``preserve`` says (:mod:`structlin.swap._starts`), and returns a :class:`SwapResult`.
- :func:`unswap` puts the original layers back.
- :meth:`SwapResult.to_plan` records the new structure as JSON-ready data (:mod:`structlin.swap._plan`);
  :func:`apply_plan` rebuilds it on a freshly built model, so that a saved ``state_dict`` loads into it.

The modules, imports flowing one way: ``_adapters`` (linear-like types and convolutions) and ``_select``
(patterns) ← ``_modules`` (finding, counting, installing) and ``_starts`` (start table) ← ``_convs`` (building and
measuring convolutions' replacements) and ``_plan`` (format) ← ``_result`` ← ``_swap`` ← ``_apply``.
"""

from ._adapters import LinearAdapter, linear_adapters, register_linear_adapter, unregister_linear_adapter
from ._apply import apply_plan
from ._plan import PLAN_FILE
from ._result import SwappedLayer, SwapResult
from ._starts import PRESERVE, STARTS
from ._swap import TIED, swap, unswap

__all__ = [
    "PLAN_FILE",
    "PRESERVE",
    "STARTS",
    "TIED",
    "LinearAdapter",
    "SwapResult",
    "SwappedLayer",
    "apply_plan",
    "linear_adapters",
    "register_linear_adapter",
    "swap",
    "unregister_linear_adapter",
    "unswap",
]

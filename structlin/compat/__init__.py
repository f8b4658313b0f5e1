"""Drop-in replacements for other libraries' APIs, built on structlin's transforms.

* :mod:`structlin.compat.torch_dct`: every public name of torch-dct 0.1.6 (``import structlin.compat.torch_dct as
  torch_dct``), with its signatures and defaults (``norm=None``).

See ``docs/migrating.md`` for what differs and how to move to structlin's own functions.
"""

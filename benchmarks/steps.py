"""Timed steps shared by the benchmark suites (a module of its own: bench_*.py files also run as scripts)."""


def training_step(module, x):
    """A function running one forward+backward of ``module`` on ``x`` (``sum()`` as the loss), clearing grads first."""

    def step():
        for p in module.parameters():
            p.grad = None
        x.grad = None
        module(x).sum().backward()

    return step

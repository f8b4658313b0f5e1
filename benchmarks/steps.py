"""Timed steps shared by the benchmark suites (a module of its own: bench_*.py files also run as scripts)."""


def training_step(module, x):
    """A function running one forward+backward of ``module`` on ``x`` (``sum()`` as the loss), clearing grads first."""

    def step():
        for p in module.parameters():
            p.grad = None
        x.grad = None
        module(x).sum().backward()

    return step


def alternated_pair(layer_step, reference_step, rounds: int, warmup: int = 1) -> dict:
    """Time two steps alternately (the order swapping each round) after ``warmup`` calls of each: median times in
    ms and the median, min and max of the per-round ratio ``layer / reference``."""
    import statistics
    import time

    steps = (layer_step, reference_step)
    for step in steps:
        for _ in range(warmup):
            step()
    times: list[list[float]] = [[], []]
    for r in range(rounds):
        for i in (0, 1) if r % 2 == 0 else (1, 0):
            start = time.perf_counter()
            steps[i]()
            times[i].append(time.perf_counter() - start)
    ratios = [a / b for a, b in zip(*times)]
    return {"layer_ms": 1e3 * statistics.median(times[0]), "reference_ms": 1e3 * statistics.median(times[1]),
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}

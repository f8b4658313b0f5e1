"""Quadratic convolutions on real (small) work: QuadraNet V2's conversion of a trained CNN, and Xu's and Fan's neurons
inside CNNs trained from scratch at equal parameter counts.

Part 1 (``quadranet``), MNIST-1D. A 1-D CNN of the kind the dataset's authors use (three ``nn.Conv1d`` of 25
channels, kernels 5/3/3, stride 2, ReLU, a linear head: 5,210 parameters) is trained to convergence (``--base-steps``
steps, Adam lr 1e-2, batch 100: training accuracy 1.0). Then every variant gets the same extra training *time*
``B`` = the time of ``--extra-dense-steps`` dense steps (each variant's steps = ``B`` / its own step time, measured
in the same run with the variants' steps interleaved; Adam lr 1e-3):

- ``dense-further``: the dense CNN trained on;
- ``lowrank[-atrous]-quadratic`` / ``-all``: the CNN converted by one call, ``structlin.swap(model, "quadratic",
  form="lowrank", rank=8, exclude="head", conv_options={"quadratic_dilation": 2})`` (every conv becomes
  ``QuadraticConv1d.from_conv``: the same function, checked), then training only the quadratic parameters
  (``U``, ``V``, ``P``) or every parameter; ``-atrous`` has ``quadratic_dilation=2``;
- ``lowrank[-atrous]-scratch``: the same quadratic CNN built fresh (``preserve="none"``) and trained from scratch
  with the base recipe.

Every run but the ``-quadratic`` ones goes on to ``10·B``, its test accuracy recorded along the way; the accuracy
"after B" is read at the step where its time reaches ``B`` (training is deterministic, so it is what a run
stopped there gives).

Part 2 (``xu``), MNIST-1D: the same CNN with every conv an ``xu`` or ``fan`` quadratic convolution, trained from
scratch with the base recipe, its channel count chosen so that the model's parameter count is closest to the dense
CNN's; ``-relinear`` trains the quadratic parameters at a tenth of the rate (``structlin.param_groups``). Part 3
(``digits``): the same comparison on scikit-learn's 8×8 digits with a 2-D CNN (conv 3×3, conv 3×3 stride 2,
linear head; 16 channels dense).

Quadratic layers start with the library's default ``init="linear-start"``. Test accuracy mean ± sd over seeds;
FLOPs per sample (forward, backward) from ``structlin.report``; one thread.

    python examples/quadratic_cnn.py                 # writes docs/figures/quadratic_cnn.{json,png}
    python examples/quadratic_cnn.py --quick --out /tmp/quadratic_cnn
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from acdc_mlp import load_mnist1d_split  # MNIST-1D generated locally (make_dataset), never downloaded
from torch import nn

import structlin

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "figures"
CONV = {1: nn.Conv1d, 2: nn.Conv2d}
QUADRATIC = {1: structlin.QuadraticConv1d, 2: structlin.QuadraticConv2d}


# --------------------------------------------------------------------------------------------------- models
def _conv(dims: int, family: str, in_channels: int, out_channels: int, kernel: int, **geometry) -> nn.Module:
    if family == "dense":
        return CONV[dims](in_channels, out_channels, kernel, **geometry)
    return QUADRATIC[dims](in_channels, out_channels, kernel, form=family, **geometry)


def cnn1d(family: str = "dense", channels: int = 25, length: int = 40, classes: int = 10) -> nn.Sequential:
    """MNIST-1D's CNN: three convolutions (stride 2), ReLU, a linear head. Input ``(N, 1, length)``."""
    layers = OrderedDict()
    sizes = [(1, 5), (channels, 3), (channels, 3)]
    for i, (in_channels, kernel) in enumerate(sizes, 1):
        layers[f"conv{i}"] = _conv(1, family, in_channels, channels, kernel, stride=2, padding=1)
        layers[f"relu{i}"] = nn.ReLU()
        length = (length + 2 - kernel) // 2 + 1
    layers["flatten"] = nn.Flatten()
    layers["head"] = nn.Linear(channels * length, classes)
    return nn.Sequential(layers)


def cnn2d(family: str = "dense", channels: int = 16, classes: int = 10) -> nn.Sequential:
    """A 2-D CNN for 8×8 images: conv 3×3, conv 3×3 stride 2, ReLU after each, a linear head."""
    return nn.Sequential(OrderedDict(
        conv1=_conv(2, family, 1, channels, 3, padding=1), relu1=nn.ReLU(),
        conv2=_conv(2, family, channels, channels, 3, stride=2, padding=1), relu2=nn.ReLU(),
        flatten=nn.Flatten(), head=nn.Linear(channels * 16, classes)))


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def channels_for(build, family: str, target: int) -> int:
    """The channel count whose model has the parameter count closest to ``target``."""
    return min(range(1, 129), key=lambda c: abs(count(build(family, c)) - target))


def flops(model: nn.Module, sample: torch.Tensor) -> dict:
    """Parameters and FLOPs of one sample, forward and backward, as ``structlin.report`` measures them."""
    total = structlin.report(model, sample[:1]).total
    return {"params": total.params, "forward_flops": total.forward_flops, "backward_flops": total.backward_flops}


# --------------------------------------------------------------------------------------------------- data, training
def mnist1d(samples: int):
    x_train, y_train, x_test, y_test = (torch.as_tensor(a) for a in load_mnist1d_split(samples))
    return x_train.float()[:, None], y_train.long(), x_test.float()[:, None], y_test.long()


def digits(seed: int = 0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x / 16.0, y, test_size=0.2, random_state=seed, stratify=y)
    as_images = lambda a: torch.as_tensor(a, dtype=torch.float32).view(-1, 1, 8, 8)  # noqa: E731
    return as_images(x_train), torch.as_tensor(y_train), as_images(x_test), torch.as_tensor(y_test)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


class Trainer:
    """Adam on random batches (a fixed generator per run) of one model and one parameter list."""

    def __init__(self, model: nn.Module, data, *, lr: float, seed: int, batch: int, parameters=None):
        self.model, self.data, self.batch = model, data, batch
        self.generator = torch.Generator().manual_seed(seed)
        self.optimizer = torch.optim.Adam(list(model.parameters()) if parameters is None else parameters, lr=lr)

    def step(self) -> None:
        x, y = self.data[0], self.data[1]
        self.model.train()
        index = torch.randint(0, x.shape[0], (self.batch,), generator=self.generator)
        loss = nn.functional.cross_entropy(self.model(x[index]), y[index])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def run(self, steps: int, checkpoints: int = 0, marks=()) -> dict:
        """``steps`` steps; the test accuracy at ``checkpoints`` evenly spaced steps and at the steps ``marks``."""
        marks = {round(steps * (i + 1) / checkpoints) for i in range(checkpoints)} | set(marks)
        curve, seconds = [], 0.0
        for s in range(1, steps + 1):
            start = time.perf_counter()
            self.step()
            seconds += time.perf_counter() - start
            if s in marks:
                curve.append((s, accuracy(self.model, self.data[2], self.data[3])))
        return {"steps": steps, "seconds": seconds, "test_acc": accuracy(self.model, self.data[2], self.data[3]),
                "train_acc": accuracy(self.model, self.data[0], self.data[1]), "curve": curve}


def step_seconds(trainers: dict[str, Trainer], rounds: int) -> dict[str, float]:
    """The median seconds of one training step of each (copied) trainer, their steps interleaved round by round."""
    copies = {name: copy.deepcopy(t) for name, t in trainers.items()}
    for t in copies.values():
        t.step()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in copies}
    for r in range(rounds):
        names = list(copies) if r % 2 == 0 else list(reversed(copies))
        for name in names:
            start = time.perf_counter()
            copies[name].step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _summary(values) -> dict:
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0}


# --------------------------------------------------------------------------------------------------- part 1
def quadranet(data, args) -> dict:
    """Train a dense CNN, then compare what the same extra time buys (see the module docstring)."""
    runs = []
    for seed in args.seeds:
        torch.manual_seed(seed)
        base = cnn1d()
        base_run = Trainer(base, data, lr=1e-2, seed=seed, batch=args.batch).run(args.base_steps, checkpoints=8)
        print(f"  seed {seed}: dense base {base_run['test_acc']:.4f} (train {base_run['train_acc']:.4f}, "
              f"{base_run['seconds']:.1f} s)", flush=True)
        models, trainers, exact = {}, {}, {}
        models["dense-further"] = copy.deepcopy(base)
        for atrous in (False, True):
            name = "lowrank-atrous" if atrous else "lowrank"
            conv_options = {"quadratic_dilation": 2} if atrous else None
            for train in ("quadratic", "all"):
                model = copy.deepcopy(base)
                structlin.swap(model, "quadratic", form="lowrank", rank=args.rank, exclude="head",
                               conv_options=conv_options)
                exact[f"{name}-{train}"] = bool(torch.equal(model(data[2]), base(data[2])))
                models[f"{name}-{train}"] = model
            torch.manual_seed(seed)
            scratch = cnn1d()
            structlin.swap(scratch, "quadratic", form="lowrank", rank=args.rank, exclude="head",
                           conv_options=conv_options, preserve="none")
            models[f"{name}-scratch"] = scratch
        for name, model in models.items():
            parameters = None
            if name.endswith("-quadratic"):
                parameters = [p for m in model.modules() if isinstance(m, structlin.QuadraticConv1d)
                              for p in m.quadratic_parameters()]
            lr = 1e-2 if name.endswith("-scratch") else 1e-3
            trainers[name] = Trainer(model, data, lr=lr, seed=seed + 100, batch=args.batch, parameters=parameters)
        seconds = step_seconds(trainers, args.calibration_rounds)
        budget = args.extra_dense_steps * seconds["dense-further"]
        entry = {"seed": seed, "base": base_run, "budget_seconds": budget, "step_seconds": seconds, "exact": exact,
                 "runs": {}}
        for name, trainer in trainers.items():
            at_budget = max(1, round(budget / seconds[name]))
            long = not name.endswith("-quadratic")  # the scratch runs and the runs that train everything go on
            steps = max(1, round(10 * budget / seconds[name])) if long else at_budget
            run = trainer.run(steps, checkpoints=40 if long else 8, marks=[at_budget])
            run["curve_seconds"] = [(s * seconds[name], acc) for s, acc in run["curve"]]
            run["steps_at_budget"] = at_budget
            run["test_acc_at_budget"] = dict(run["curve"])[at_budget]
            entry["runs"][name] = run
            print(f"    {name:>26}: test {run['test_acc_at_budget']:.4f} after B ({at_budget} steps)"
                  + (f", {run['test_acc']:.4f} after 10·B ({steps} steps)" if long else "")
                  + f"; {run['seconds']:.1f} s", flush=True)
        entry["matched"] = _time_to_match(entry)
        runs.append(entry)
        if seed == args.seeds[0]:
            costs = {"dense-base": flops(base, data[2]), **{name: flops(m, data[2]) for name, m in models.items()}}
    summary = {"dense-base": {**costs["dense-base"], "test_acc": _summary([r["base"]["test_acc"] for r in runs]),
                              "seconds": _summary([r["base"]["seconds"] for r in runs])}}
    for name in runs[0]["runs"]:
        values = lambda key: [r["runs"][name][key] for r in runs]  # noqa: E731
        summary[name] = {**costs[name], "test_acc_at_budget": _summary(values("test_acc_at_budget")),
                         "steps_at_budget": _summary(values("steps_at_budget"))}
        if not name.endswith("-quadratic"):
            summary[name]["test_acc_at_10_budgets"] = _summary(values("test_acc"))
        matched = [r["matched"].get(name) for r in runs]
        if name in runs[0]["matched"]:
            summary[name]["scratch_seconds_to_match"] = matched
    print("  at B: " + ", ".join(f"{n} {v['test_acc_at_budget']['mean']:.4f} ± {v['test_acc_at_budget']['std']:.4f}"
                                for n, v in summary.items() if n != "dense-base"), flush=True)
    return {"runs": runs, "summary": summary}


def _time_to_match(entry: dict) -> dict:
    """For each converted variant: the seconds its scratch counterpart needed to first reach the test accuracy
    the variant had after ``B`` (``None``: not within ``10·B``)."""
    matched = {}
    for name, run in entry["runs"].items():
        if not name.startswith("lowrank") or name.endswith("-scratch"):
            continue
        scratch = entry["runs"][name.rsplit("-", 1)[0] + "-scratch"]
        times = [t for t, acc in scratch["curve_seconds"] if acc >= run["test_acc_at_budget"]]
        matched[name] = times[0] if times else None
    return matched


# --------------------------------------------------------------------------------------------------- parts 2, 3
def equal_parameters(build, data, args, *, steps: int, batch: int, lr: float, dense_channels: int) -> dict:
    """Dense, xu and fan CNNs at the parameter count of the dense one, each trained from scratch for ``steps``;
    ``-relinear``: the quadratic parameters at a tenth of the rate (``structlin.param_groups``, ReLinear)."""
    target = count(build("dense", dense_channels))
    results = {}
    for name in ("dense", "xu", "fan", "xu-relinear", "fan-relinear"):
        family, _, relinear = name.partition("-")
        channels = dense_channels if family == "dense" else channels_for(build, family, target)
        runs = []
        for seed in args.seeds:
            torch.manual_seed(seed)
            model = build(family, channels)
            groups = structlin.param_groups(model, lr=lr, quadratic_lr_scale=0.1) if relinear else None
            runs.append(Trainer(model, data, lr=lr, seed=seed, batch=batch, parameters=groups).run(steps))
        model = build(family, channels)
        results[name] = {"channels": channels, **flops(model, data[2]),
                           "test_acc": _summary([r["test_acc"] for r in runs]),
                           "train_acc": _summary([r["train_acc"] for r in runs]),
                           "seconds": _summary([r["seconds"] for r in runs]), "runs": runs}
        entry = results[name]
        print(f"  {name:>12} C={channels:<3} {entry['params']:>6,} params: test {entry['test_acc']['mean']:.4f} ± "
              f"{entry['test_acc']['std']:.4f}, {entry['seconds']['mean']:.1f} s/run", flush=True)
    return results


def xu_fan(data, args) -> dict:
    print("MNIST-1D, 1-D CNN, equal parameters", flush=True)
    one = equal_parameters(lambda family, c: cnn1d(family, c), data, args, steps=args.base_steps,
                           batch=args.batch, lr=1e-2, dense_channels=25)
    print("digits, 2-D CNN, equal parameters", flush=True)
    two = equal_parameters(lambda family, c: cnn2d(family, c), digits(), args, steps=args.digits_steps, batch=64,
                           lr=1e-2, dense_channels=16)
    return {"mnist1d": one, "digits": two}


# --------------------------------------------------------------------------------------------------- figure
def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), gridspec_kw={"width_ratios": [1.6, 1, 1]})
    ax = axes[0]
    runs = report["quadranet"]["runs"]
    budget = statistics.mean(r["budget_seconds"] for r in runs)
    base = statistics.mean(r["base"]["test_acc"] for r in runs)
    ax.axhline(base, color="k", lw=0.8, ls=":", label="dense CNN after its base training")
    for i, name in enumerate(runs[0]["runs"]):
        # the mean over seeds of each curve, on the mean time axis (steps differ a little between seeds)
        curves = [np.array(r["runs"][name]["curve_seconds"]) for r in runs]
        length = min(len(c) for c in curves)
        t = np.mean([c[:length, 0] for c in curves], axis=0) / budget
        acc = np.mean([c[:length, 1] for c in curves], axis=0)
        style = "--" if name.endswith("-scratch") else "-"
        ax.plot(t, acc, style, marker="." if style == "-" else None, color=f"C{i}", label=name)
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("extra training time / B (B = time of the dense model's extra steps)")
    ax.set_ylabel("MNIST-1D test accuracy (mean over seeds)")
    ax.set_title("QuadraNet V2 at CPU scale: convert a trained CNN vs train on vs from scratch")
    top = max(max(a for r in runs for run in r["runs"].values() for _, a in run["curve_seconds"]), base)
    ax.set_ylim(base - 0.08, min(1.0, top + 0.01))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    for ax, key, title in ((axes[1], "mnist1d", "MNIST-1D, 1-D CNN"), (axes[2], "digits", "digits 8×8, 2-D CNN")):
        entries = report["xu"][key]
        names = list(entries)
        means = [entries[n]["test_acc"]["mean"] for n in names]
        errors = [entries[n]["test_acc"]["std"] for n in names]
        ax.bar(range(len(names)), means, yerr=errors, capsize=4, color=[f"C{i}" for i in range(len(names))])
        ax.set_xticks(range(len(names)), [f"{n}\nC={entries[n]['channels']}\n{entries[n]['params']:,} p"
                                          for n in names], fontsize=7)
        ax.set_ylim(max(0.0, min(means) - 0.06), min(1.0, max(means) + 0.03))
        ax.set_ylabel("test accuracy (mean ± sd)")
        ax.set_title(f"{title}: equal parameters, from scratch", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny data and step counts, one seed")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samples", type=int, default=5000, help="MNIST-1D sequences (80%% train, 20%% test)")
    parser.add_argument("--base-steps", type=int, default=4000)
    parser.add_argument("--extra-dense-steps", type=int, default=1000)
    parser.add_argument("--digits-steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--calibration-rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.seeds, args.samples, args.base_steps, args.extra_dense_steps = [0], 1000, 40, 10
        args.digits_steps, args.calibration_rounds = 20, 3

    started = time.perf_counter()
    print("MNIST-1D: QuadraNet V2's conversion", flush=True)
    data = mnist1d(args.samples)
    report = {"quadranet": quadranet(data, args), "xu": xu_fan(data, args)}
    report["config"] = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                        "torch": torch.__version__, "python": platform.python_version(),
                        "machine": platform.machine(), "seconds": time.perf_counter() - started}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quadratic_cnn.json").write_text(json.dumps(report, indent=1))
    plot(report, args.out / "quadratic_cnn.png")
    print(f"wrote {args.out / 'quadratic_cnn.json'} and .png in {report['config']['seconds']:.0f} s", flush=True)
    return report


if __name__ == "__main__":
    main()

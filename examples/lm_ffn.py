"""Replacing a transformer's FFN layers: a byte-level language model on Python's standard library, with the FFN
dense, ACDC, Fastfood, LowRank, Monarch or quadratic with ACDC branches, at equal training wall-clock.

Data: the source files listed in ``STDLIB_FILES`` (present in CPython 3.10, 3.11 and 3.12 installs), read as bytes
from ``sysconfig.get_paths()["stdlib"]``, in that order; the files in ``VALIDATION_FILES`` are the validation set,
the rest the training set (split by file). The bytes differ between Python releases, so compare numbers from one
Python version; the JSON records the version, the sizes and a SHA-256 of each split.

Model: decoder-only transformer on bytes (vocabulary 256), learned positions, pre-LayerNorm blocks of causal
self-attention (``F.scaled_dot_product_attention``) and an FFN ``first → GELU → second``, a final LayerNorm and a
linear head. Only the FFN's two layers change between variants (``VARIANTS``); each variant is built at its natural
size (hidden width 4·width) or, where its kind can reach it, widened until the FFN has the dense FFN's parameter
count (``hidden="match"``).

Training: AdamW (β = 0.9, 0.95, no weight decay), gradient clipping at 1, batches of random windows of the training
bytes. Every run gets the same training wall-clock (``--budget`` seconds, evaluation excluded); the learning rate
warms up linearly over the first ``--warmup`` of the budget and then follows a cosine from the base rate to a tenth
of it (the schedule runs on the budget's elapsed fraction, so every variant gets the whole schedule). Learning rates: ``structlin.param_groups(model, lr=--lr)``, i.e. the per-kind rules
(``--rules flat`` for every parameter at the base rate). Validation bits per byte on fixed windows of the validation
bytes, every ``budget/--evals`` seconds and at the end (on more windows). Parameters, FLOPs per training step and
bytes saved for backward are ``structlin.report``'s, measured on one training step (loss included).

    python examples/lm_ffn.py                       # the full run: writes docs/figures/lm_ffn.{json,png}
    python examples/lm_ffn.py --sweep               # the learning-rate sweep: docs/figures/lm_sweep.json
    python examples/lm_ffn.py --quick --out /tmp/lm # smoke run (a few seconds)

On a machine with two cores the record was made with one process per seed, each on one thread, and merged:

    python examples/lm_ffn.py --seeds 0 --threads 1 --out /tmp/lm0 &
    python examples/lm_ffn.py --seeds 1 --threads 1 --out /tmp/lm1 &
    wait; python examples/lm_ffn.py --merge /tmp/lm0/lm_ffn.json /tmp/lm1/lm_ffn.json
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import sys
import sysconfig
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import structlin
from structlin.layers.monarch import default_nblocks
from structlin.strategies.init import resolve_acdc_init
from structlin.strategies.lr import rule_for

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "figures"

# ------------------------------------------------------------------------------------------------ the corpus

#: Files of CPython's standard library (relative to ``sysconfig.get_paths()["stdlib"]``) that exist, as files, in
#: 3.10, 3.11 and 3.12 (none removed by 3.12's PEP 594 removals or turned into a package by then; no tkinter,
#: idlelib, test or lib2to3, which distributions may leave out). About 5.2 MB in 3.11.
STDLIB_FILES = (
    "__future__.py", "_collections_abc.py", "_compression.py", "_markupbase.py", "_pydecimal.py", "_pyio.py",
    "_strptime.py", "_threading_local.py", "_weakrefset.py", "abc.py", "argparse.py", "ast.py", "base64.py",
    "bdb.py", "bisect.py", "bz2.py", "calendar.py", "cmd.py", "code.py", "codecs.py", "codeop.py", "colorsys.py",
    "compileall.py", "configparser.py", "contextlib.py", "contextvars.py", "copy.py", "copyreg.py", "cProfile.py",
    "csv.py", "dataclasses.py", "datetime.py", "difflib.py", "dis.py", "doctest.py", "enum.py", "filecmp.py",
    "fileinput.py", "fnmatch.py", "fractions.py", "ftplib.py", "functools.py", "genericpath.py", "getopt.py",
    "getpass.py", "gettext.py", "glob.py", "graphlib.py", "gzip.py", "hashlib.py", "heapq.py", "hmac.py",
    "imaplib.py", "inspect.py", "io.py", "ipaddress.py", "keyword.py", "linecache.py", "locale.py", "lzma.py",
    "mailbox.py", "mimetypes.py", "modulefinder.py", "netrc.py", "ntpath.py", "numbers.py", "opcode.py",
    "operator.py", "optparse.py", "os.py", "pdb.py", "pickle.py", "pickletools.py", "pkgutil.py", "platform.py",
    "plistlib.py", "poplib.py", "posixpath.py", "pprint.py", "profile.py", "pstats.py", "pty.py", "py_compile.py",
    "pyclbr.py", "queue.py", "quopri.py", "random.py", "reprlib.py", "rlcompleter.py", "runpy.py", "sched.py",
    "secrets.py", "selectors.py", "shelve.py", "shlex.py", "shutil.py", "signal.py", "site.py", "smtplib.py",
    "socket.py", "socketserver.py", "ssl.py", "stat.py", "statistics.py", "string.py", "stringprep.py",
    "struct.py", "subprocess.py", "symtable.py", "tabnanny.py", "tarfile.py", "tempfile.py", "textwrap.py",
    "threading.py", "timeit.py", "token.py", "tokenize.py", "trace.py", "traceback.py", "tracemalloc.py", "tty.py",
    "types.py", "typing.py", "uuid.py", "warnings.py", "wave.py", "weakref.py", "webbrowser.py", "zipapp.py",
    "zipimport.py", "asyncio/base_events.py", "asyncio/tasks.py", "collections/__init__.py",
    "concurrent/futures/_base.py", "concurrent/futures/process.py", "email/_header_value_parser.py",
    "email/message.py", "email/utils.py", "html/parser.py", "http/client.py", "http/cookiejar.py",
    "http/server.py", "importlib/__init__.py", "json/__init__.py", "json/decoder.py", "json/encoder.py",
    "logging/__init__.py", "logging/config.py", "logging/handlers.py", "multiprocessing/pool.py",
    "unittest/case.py", "unittest/mock.py", "urllib/parse.py", "urllib/request.py", "xml/dom/minidom.py",
    "xml/etree/ElementTree.py",
)

#: The validation files (about a tenth of the bytes); every other file of ``STDLIB_FILES`` is for training.
VALIDATION_FILES = (
    "argparse.py", "difflib.py", "fractions.py", "http/server.py", "json/decoder.py", "pprint.py", "shlex.py",
    "statistics.py", "tarfile.py", "textwrap.py", "xml/dom/minidom.py",
)


@dataclasses.dataclass(frozen=True)
class Corpus:
    """The training and validation bytes as ``uint8`` tensors, and what identifies them."""

    train: torch.Tensor
    val: torch.Tensor
    info: dict


def load_corpus(stdlib: str | Path | None = None) -> Corpus:
    """Read ``STDLIB_FILES`` from ``stdlib`` (default: this Python's) and split them by file."""
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    missing = [name for name in STDLIB_FILES if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(f"the standard library at {root} lacks {', '.join(missing)}")
    parts = {"train": [], "val": []}
    for name in STDLIB_FILES:
        parts["val" if name in VALIDATION_FILES else "train"].append((root / name).read_bytes())
    data = {split: b"".join(chunks) for split, chunks in parts.items()}
    info = {"python": platform.python_version(), "stdlib": str(root),
            "files": {split: len(chunks) for split, chunks in parts.items()},
            "bytes": {split: len(blob) for split, blob in data.items()},
            "sha256": {split: hashlib.sha256(blob).hexdigest() for split, blob in data.items()}}
    tensors = {split: torch.frombuffer(bytearray(blob), dtype=torch.uint8) for split, blob in data.items()}
    return Corpus(tensors["train"], tensors["val"], info)


def random_windows(data: torch.Tensor, batch: int, context: int, generator: torch.Generator) -> torch.Tensor:
    """``(batch, context + 1)`` int64: windows of ``data`` at random offsets (inputs and next-byte targets)."""
    starts = torch.randint(0, data.numel() - context - 1, (batch,), generator=generator)
    return torch.stack([data[s: s + context + 1] for s in starts.tolist()]).long()


def fixed_windows(data: torch.Tensor, count: int, context: int) -> torch.Tensor:
    """``(count, context + 1)`` int64: windows at evenly spaced offsets (the same for every run)."""
    starts = torch.linspace(0, data.numel() - context - 1, count).long()
    return torch.stack([data[s: s + context + 1] for s in starts.tolist()]).long()


# ------------------------------------------------------------------------------------------------ the model

@dataclasses.dataclass(frozen=True)
class Config:
    width: int = 256
    layers: int = 4
    heads: int = 4
    context: int = 256
    batch: int = 16


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    def __init__(self, config: Config, ffn: nn.Module):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(config.width), nn.LayerNorm(config.width)
        self.attn = Attention(config.width, config.heads)
        self.ffn = ffn

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class ByteLM(nn.Module):
    """``(batch, length)`` bytes → ``(batch, length, 256)`` next-byte logits."""

    def __init__(self, config: Config, make_ffn):
        super().__init__()
        self.embed = nn.Embedding(256, config.width)
        self.position = nn.Parameter(torch.zeros(config.context, config.width))
        self.blocks = nn.ModuleList(Block(config, make_ffn()) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, 256)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.position, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.position[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class WithLoss(nn.Module):
    """``model`` and its next-byte cross-entropy: what one training step runs (for the report)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return next_byte_loss(self.model, windows)


def next_byte_loss(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats) of predicting ``windows[:, 1:]`` from ``windows[:, :-1]``."""
    logits = model(windows[:, :-1])
    return F.cross_entropy(logits.reshape(-1, 256), windows[:, 1:].reshape(-1))


# ------------------------------------------------------------------------------------------------ the variants

@dataclasses.dataclass(frozen=True)
class Variant:
    """One FFN: ``kind`` (``"dense"``, ``"quadratic-acdc"`` or a registered layer kind) with ``options``, at
    hidden width ``4·width`` (``"natural"``) or widened to the dense FFN's parameter count (``"match"``)."""

    name: str
    kind: str
    options: dict
    hidden: str = "natural"


def variants(width: int) -> list[Variant]:
    return [
        Variant("dense", "dense", {}),
        Variant("monarch", "monarch", {}),
        Variant("monarch-wide", "monarch", {"nblocks": 4}, "match"),
        Variant("lowrank", "lowrank", {"rank": width // 4}),
        Variant("lowrank-wide", "lowrank", {"rank": width // 4}, "match"),
        Variant("acdc", "acdc", {"depth": 4, "init": "variance-preserving"}),
        Variant("fastfood", "fastfood", {}),
        Variant("quadratic-acdc", "quadratic-acdc", {"form": "xu", "branch": "acdc", "depth": 4}),
        Variant("quadratic-acdc-wide", "quadratic-acdc", {"form": "xu", "branch": "acdc", "depth": 4}, "match"),
    ]


def make_layer(kind: str, in_features: int, out_features: int, options: dict) -> nn.Module:
    """One FFN layer. ``"quadratic-acdc"``: a :class:`structlin.Quadratic` whose ACDC parts start from random
    signs (``"variance-preserving"``, as the ACDC FFN; the quadratic layer's own ``init`` is ``linear-start``)."""
    if kind == "dense":
        return nn.Linear(in_features, out_features)
    if kind == "quadratic-acdc":
        layer = structlin.Quadratic(in_features, out_features, **options)
        for module in layer.modules():
            if isinstance(module, structlin.ACDC):
                module.init = resolve_acdc_init("variance-preserving")
        layer.reset_parameters()
        return layer
    return structlin.StructuredLayer.create(kind, in_features, out_features, **options)


def make_ffn(kind: str, width: int, hidden: int, options: dict) -> nn.Sequential:
    return nn.Sequential(make_layer(kind, width, hidden, options), nn.GELU(),
                         make_layer(kind, hidden, width, options))


def ffn_params(kind: str, width: int, hidden: int, options: dict) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in make_ffn(kind, width, hidden, options).parameters())


def hidden_width(variant: Variant, width: int, step: int) -> int:
    """``4·width``, or (``"match"``) the multiple of ``step`` whose FFN is nearest the dense FFN in parameters."""
    if variant.hidden == "natural":
        return 4 * width
    target = ffn_params("dense", width, 4 * width, {})
    candidates = range(step, 64 * width + 1, step)
    return min(candidates, key=lambda h: abs(ffn_params(variant.kind, width, h, variant.options) - target))


def rules_label(kind: str, rules) -> str:
    """How the learning rate of ``kind``'s parameters was set (for the table)."""
    rule_kind = "acdc" if kind == "quadratic-acdc" else kind
    return "base rate" if kind == "dense" else repr(rule_for(rule_kind, rules))


# ------------------------------------------------------------------------------------------------ training

def lr_factor(progress: float, warmup: float) -> float:
    """Linear warm-up over the first ``warmup`` of the run, then a cosine from 1 to 0.1 (``progress`` in [0, 1])."""
    progress = min(progress, 1.0)
    if progress < warmup:
        return max(progress, 1e-3) / warmup
    return 0.1 + 0.45 * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup)))


@torch.no_grad()
def bits_per_byte(model: nn.Module, windows: torch.Tensor, batch: int) -> float:
    model.eval()
    total = 0.0
    for chunk in windows.split(batch):
        total += next_byte_loss(model, chunk).item() * chunk.shape[0]
    model.train()
    return total / windows.shape[0] / math.log(2)


def measure(model: nn.Module, windows: torch.Tensor) -> dict:
    """``structlin.report`` of one training step (forward and backward, loss included), and of the FFNs alone."""
    r = structlin.report(WithLoss(model), windows)
    ffn = [row for row in r.rows if row.name.endswith(".ffn") and row.name.count(".") == 3]
    total = r.total
    return {"params": total.params, "forward_flops": total.forward_flops, "backward_flops": total.backward_flops,
            "saved_bytes": total.saved_bytes, "ffn_params": sum(row.params for row in ffn),
            "ffn_forward_flops": sum(row.forward_flops for row in ffn),
            "ffn_backward_flops": sum(row.backward_flops for row in ffn), "unsupported": sorted(r.unsupported())}


def train(variant: Variant, config: Config, corpus: Corpus, *, seed: int, hidden: int, lr: float, rules,
          budget: float, max_steps: int | None, evals: int, warmup: float, eval_windows: int,
          final_windows: int, quadratic_lr_scale: float = 0.1, inspect=None) -> dict:
    """Train one variant for ``budget`` seconds of training time (or ``max_steps``); the curve and the summary
    (with ``inspect(model)`` of the trained model under ``"inspected"`` when given)."""
    torch.manual_seed(seed)
    model = ByteLM(config, lambda: make_ffn(variant.kind, config.width, hidden, variant.options))
    groups = structlin.param_groups(model, lr=lr, rules=rules, quadratic_lr_scale=quadratic_lr_scale)
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.95), weight_decay=0.0)
    bases = [group["lr"] for group in optimizer.param_groups]
    generator = torch.Generator().manual_seed(seed)
    probe = random_windows(corpus.train, config.batch, config.context, torch.Generator().manual_seed(10_000 + seed))
    costs = measure(model, probe)
    val = fixed_windows(corpus.val, eval_windows, config.context)
    curve = [{"step": 0, "time": 0.0, "val_bpb": bits_per_byte(model, val, config.batch), "train_loss": None}]
    next_eval, elapsed, step, losses = budget / evals, 0.0, 0, []
    load_before = os.getloadavg()[0]
    while elapsed < budget and (max_steps is None or step < max_steps):
        start = time.perf_counter()
        factor = lr_factor(max(elapsed / budget, step / max_steps if max_steps else 0.0), warmup)
        for group, base in zip(optimizer.param_groups, bases):
            group["lr"] = base * factor
        loss = next_byte_loss(model, random_windows(corpus.train, config.batch, config.context, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        elapsed += time.perf_counter() - start
        step += 1
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            break
        last = elapsed >= budget or (max_steps is not None and step >= max_steps)
        if elapsed >= next_eval or last:
            curve.append({"step": step, "time": elapsed, "val_bpb": bits_per_byte(model, val, config.batch),
                          "train_loss": sum(losses[-20:]) / len(losses[-20:])})
            next_eval += budget / evals
    final = bits_per_byte(model, fixed_windows(corpus.val, final_windows, config.context), config.batch)
    tokens = step * config.batch * config.context
    return {"variant": variant.name, "kind": variant.kind, "options": variant.options, "hidden": hidden,
            "seed": seed, "lr": lr, "lr_rule": rules_label(variant.kind, rules), "steps": step,
            "train_seconds": elapsed, "tokens_per_second": tokens / elapsed if elapsed else 0.0,
            "training_flops": step * (costs["forward_flops"] + costs["backward_flops"]), "final_val_bpb": final,
            "diverged": not math.isfinite(losses[-1]) if losses else False, "load_before": load_before,
            "load_after": os.getloadavg()[0], "curve": curve, **costs,
            "groups": [{"lr_scale": g["lr_scale"], "params": sum(p.numel() for p in g["params"])} for g in groups],
            **({"inspected": inspect(model)} if inspect is not None else {})}


def projection_errors(model: nn.Module) -> list[dict]:
    """Relative Frobenius error of the closed-form starts of each trained dense FFN layer: ``Monarch.from_linear``
    (default blocks, and 4 blocks) and ``LowRank.from_linear`` at Monarch's parameter count."""
    rows = []
    for name, linear in model.named_modules():
        if not (isinstance(linear, nn.Linear) and ".ffn." in name):
            continue
        weight = linear.weight.detach()
        for nblocks in dict.fromkeys((default_nblocks(*weight.shape), 4)):
            monarch = structlin.Monarch.from_linear(linear, nblocks=nblocks)
            params = monarch.R.numel() + monarch.L.numel()
            rank = max(1, min(min(weight.shape), round(params / sum(weight.shape))))
            lowrank = structlin.LowRank.from_linear(linear, rank=rank)
            rows.append({"layer": name, "nblocks": monarch.nblocks, "params": params, "rank": rank,
                         "monarch": ((monarch.to_dense() - weight).norm() / weight.norm()).item(),
                         "lowrank": ((lowrank.to_dense() - weight).norm() / weight.norm()).item()})
    return rows


# ------------------------------------------------------------------------------------------------ outputs

def summarize(runs: list[dict]) -> list[dict]:
    """Mean and spread of each variant's final bits per byte over seeds, with its costs."""
    rows = []
    for name in dict.fromkeys(run["variant"] for run in runs):
        mine = [run for run in runs if run["variant"] == name]
        finals = [run["final_val_bpb"] for run in mine]
        mean = sum(finals) / len(finals)
        spread = (sum((f - mean) ** 2 for f in finals) / max(len(finals) - 1, 1)) ** 0.5
        first = mine[0]
        rows.append({"variant": name, "hidden": first["hidden"], "params": first["params"],
                     "ffn_params": first["ffn_params"], "val_bpb": mean, "val_bpb_sd": spread, "seeds": len(mine),
                     "steps": sum(run["steps"] for run in mine) / len(mine),
                     "tokens_per_second": sum(run["tokens_per_second"] for run in mine) / len(mine),
                     "flops_per_step": first["forward_flops"] + first["backward_flops"],
                     "ffn_flops_per_step": first["ffn_forward_flops"] + first["ffn_backward_flops"],
                     "training_flops": sum(run["training_flops"] for run in mine) / len(mine),
                     "saved_bytes": first["saved_bytes"], "lr_rule": first["lr_rule"]})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| FFN | hidden | params (FFN) | val bits/byte | steps | tokens/s | FLOPs/step (FFN) | training FLOPs "
             "| saved for backward |", "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['hidden']} | {r['params'] / 1e6:.2f}M ({r['ffn_params'] / 1e6:.3f}M) "
                     f"| {r['val_bpb']:.3f} ± {r['val_bpb_sd']:.3f} | {r['steps']:.0f} | {r['tokens_per_second']:.0f} "
                     f"| {r['flops_per_step'] / 1e9:.2f}G ({r['ffn_flops_per_step'] / 1e9:.2f}G) "
                     f"| {r['training_flops'] / 1e12:.1f}T | {r['saved_bytes'] / 2**20:.0f} MiB |")
    return "\n".join(lines)


def plot(runs: list[dict], path: Path, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure")
        return
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    names = list(dict.fromkeys(run["variant"] for run in runs))
    colors = {name: plt.cm.tab10(i % 10) for i, name in enumerate(names)}
    for run in runs:
        curve = run["curve"]
        label = run["variant"] if run["seed"] == min(r["seed"] for r in runs if r["variant"] == run["variant"]) else None
        for ax, key in zip(axes, ("step", "time")):
            ax.plot([p[key] for p in curve], [p["val_bpb"] for p in curve], color=colors[run["variant"]],
                    alpha=0.8, label=label)
    finals = [p["val_bpb"] for run in runs for p in run["curve"][1:]]
    if finals:
        low = min(finals)
        axes[0].set_ylim(low - 0.1, min(8.5, low + 2.5))
    axes[0].set_xlabel("training steps")
    axes[1].set_xlabel("training wall-clock (s)")
    axes[0].set_ylabel("validation bits per byte")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ the sweep

#: exponents of the μP-style rule swept per kind (``docs/lm.md``); 0 is the base rate, 1 the μP limit
SWEEP_EXPONENTS = (0.0, 0.5, 1.0)


def sweep_plan(names: list[str], base_lrs: list[float], exponents=SWEEP_EXPONENTS) -> list[tuple]:
    """``(variant, base lr, rules, quadratic_lr_scale)`` of each sweep run, in order: the dense FFN at each base
    rate (if ``"dense"`` is in ``names``); then each structured kind's rule at each exponent, and the quadratic FFN's
    ``quadratic_lr_scale`` at 0.1 and 1 (rules ``"best"``: its ACDC parts with the ACDC rule the sweep found best,
    or ACDC's default), at the base rate ``None``: the dense runs' best (or ``--lr``)."""
    plan = [("dense", lr, None, 0.1) for lr in base_lrs] if "dense" in names else []
    for name in names:
        if name in ("monarch", "lowrank", "acdc", "fastfood"):
            rule = type(rule_for(name))
            plan += [(name, None, {name: rule(exponent=e)}, 0.1) for e in exponents]
        elif name == "quadratic-acdc":
            plan += [(name, None, "best", scale) for scale in (0.1, 1.0)]
    return plan


# ------------------------------------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: a tiny model, 3 steps per variant, 1 thread")
    parser.add_argument("--sweep", action="store_true", help="the learning-rate sweep instead of the comparison")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--variants", default=None, help="comma-separated names (default: all)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--budget", type=float, default=300.0, help="training seconds per run")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="base learning rate (the dense layers'; the sweep's best); a sweep without dense uses it")
    parser.add_argument("--sweep-lrs", default="5e-4,1e-3,2e-3,4e-3", help="base rates the sweep tries on dense")
    parser.add_argument("--exponents", default=",".join(map(str, SWEEP_EXPONENTS)),
                        help="exponents of the per-kind rules the sweep tries")
    parser.add_argument("--rules", default=None, help="'flat' for every parameter at the base rate")
    parser.add_argument("--evals", type=int, default=15)
    parser.add_argument("--warmup", type=float, default=0.05, help="fraction of the run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSON",
                        help="combine the outputs of parallel runs (one per seed or per group of variants) into --out")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)

    config = Config()
    eval_windows, final_windows, step = 64, 512, 64
    if args.quick:
        config = Config(width=32, layers=2, heads=2, context=32, batch=4)
        args.budget, args.max_steps, args.seeds = 60.0, 3, "0"
        args.sweep_lrs, eval_windows, final_windows, step = "1e-3,2e-3", 4, 8, 8
        args.threads = 1  # a tiny model: one thread is as fast, and steadier on a busy machine
    torch.set_num_threads(args.threads)
    corpus = load_corpus()
    seeds = [int(s) for s in args.seeds.split(",")]
    all_variants = {v.name: v for v in variants(config.width)}
    names = args.variants.split(",") if args.variants else list(all_variants)
    unknown = [name for name in names if name not in all_variants]
    if unknown:
        parser.error(f"unknown variants {unknown}; valid: {', '.join(all_variants)}")
    hiddens = {name: hidden_width(all_variants[name], config.width, step) for name in {"dense", *names}}
    common = dict(budget=args.budget, max_steps=args.max_steps, evals=args.evals, warmup=args.warmup,
                  eval_windows=eval_windows, final_windows=final_windows)
    started = time.time()
    runs = []
    if args.sweep:
        exponents = [float(x) for x in args.exponents.split(",")]
        plan = sweep_plan(names, [float(x) for x in args.sweep_lrs.split(",")], exponents)
        for seed in seeds:
            base, best = args.lr, {}  # the best base rate and, per kind, the best (bits per byte, rule) so far
            for name, lr, rules, scale in plan:
                chosen = {kind: rule for kind, (_, rule) in best.items()} if rules == "best" else rules
                run = train(all_variants[name], config, corpus, seed=seed, hidden=hiddens[name], lr=lr or base,
                            rules=chosen, quadratic_lr_scale=scale, **common)
                run["quadratic_lr_scale"] = scale
                runs.append(run)
                if name == "dense":  # the best dense rate so far is the base of the structured runs
                    dense = [r for r in runs if r["variant"] == "dense" and r["seed"] == seed]
                    base = min(dense, key=lambda r: r["final_val_bpb"])["lr"]
                elif isinstance(rules, dict) and run["final_val_bpb"] < best.get(name, (math.inf,))[0]:
                    best[name] = (run["final_val_bpb"], rules[name])
                print(f"sweep {name:>15s} lr {run['lr']:.0e} {run['lr_rule']:>40s} q {scale:<4} seed {seed}: "
                      f"{run['final_val_bpb']:.4f} bpb, {run['steps']} steps", flush=True)
    else:
        for seed in seeds:  # seed-major: a burst of load on the machine hits every variant alike
            for name in names:
                inspect = projection_errors if name == "dense" else None
                run = train(all_variants[name], config, corpus, seed=seed, hidden=hiddens[name], lr=args.lr,
                            rules=args.rules, inspect=inspect, **common)
                runs.append(run)
                print(f"{name:>15s} seed {seed}: {run['final_val_bpb']:.4f} bpb, {run['steps']} steps, "
                      f"{run['tokens_per_second']:.0f} tokens/s, load {run['load_before']:.1f}→"
                      f"{run['load_after']:.1f}", flush=True)
    result = {"config": {**dataclasses.asdict(config), "budget": args.budget, "max_steps": args.max_steps,
                         "lr": args.lr, "rules": args.rules, "seeds": seeds, "evals": args.evals,
                         "warmup": args.warmup, "threads": args.threads, "eval_windows": eval_windows,
                         "final_windows": final_windows, "quick": args.quick, "sweep": args.sweep},
              "corpus": corpus.info, "machine": {"cpus": os.cpu_count(), "torch": torch.__version__,
                                                 "python": sys.version.split()[0], "platform": platform.platform()},
              "wall_seconds": time.time() - started, "runs": runs}
    return write_outputs(result, args.out)


def write_outputs(result: dict, out: Path) -> dict:
    """Write ``lm_ffn.json`` and ``lm_ffn.png`` (with the summary table) or, for a sweep, ``lm_sweep.json``."""
    config, sweep = result["config"], result["config"]["sweep"]
    out.mkdir(parents=True, exist_ok=True)
    stem = "lm_sweep" if sweep else "lm_ffn"
    if not sweep:
        result["summary"] = summarize(result["runs"])
        print(markdown(result["summary"]))
        plot(result["runs"], out / f"{stem}.png", f"byte-level LM on the stdlib, width {config['width']}, "
             f"{config['layers']} layers, context {config['context']}, {config['budget']:.0f} s of training per run")
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out / stem}.json ({result['wall_seconds']:.0f} s)")
    return result


def merge(paths: list[Path], out: Path) -> dict:
    """One result from the JSON files of runs made in parallel (e.g. one process per seed, or per group of
    variants, each with ``--threads 1``): their runs in file order, seeds and variants united; every other
    setting, the corpus and the Python version must agree (``ValueError`` naming the first that does not)."""
    results = [json.loads(Path(path).read_text()) for path in paths]
    first = results[0]
    # a sweep's runs record their own base rate (the dense runs' best, or --lr where a part ran without dense)
    keep = ("seeds", "lr") if first["config"]["sweep"] else ("seeds",)
    for path, other in zip(paths[1:], results[1:]):
        for key in ("config", "corpus"):
            mine = {k: v for k, v in first[key].items() if k not in keep}
            theirs = {k: v for k, v in other[key].items() if k not in keep}
            if mine != theirs:
                differing = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
                raise ValueError(f"{path} was run with other {key} settings than {paths[0]}: {differing}")
    seeds = sorted({seed for result in results for seed in result["config"]["seeds"]})
    runs = [run for result in results for run in result["runs"]]
    merged = {**first, "config": {**first["config"], "seeds": seeds}, "runs": runs,
              "wall_seconds": max(result["wall_seconds"] for result in results),
              "merged_from": [{"file": str(path), "seeds": result["config"]["seeds"], "lr": result["config"]["lr"],
                               "variants": list(dict.fromkeys(run["variant"] for run in result["runs"]))}
                              for path, result in zip(paths, results)]}
    merged.pop("summary", None)
    return write_outputs(merged, out)


if __name__ == "__main__":
    main()

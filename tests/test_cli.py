"""The ``structlin`` command: demo, report and bench in their quick modes (subprocesses, like a user runs them)."""

import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from torch import nn

import structlin
from structlin import ACDC
from structlin.cli import _forward_flops, _input_size, load_object, main
from structlin.demo import VARIANTS

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "structlin", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


def test_console_script_is_declared():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("structlin") == "structlin.cli:main"


def test_demo_quick(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    result = run_cli("demo", "--quick", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "accuracy" in result.stdout and "latency ms" in result.stdout
    report = json.loads((tmp_path / "demo.json").read_text())
    assert (tmp_path / "demo.png").stat().st_size > 0
    dense = report["dense"]
    assert dense["accuracy"] > 0.8  # four epochs of a dense MLP on digits
    assert dense["forward_flops"] > 0 and dense["latency_ms"] > 0
    rows = {row["label"]: row for row in report["variants"]}
    assert set(rows) == {v.label for v in VARIANTS}
    registered = structlin.available_layers()
    for variant in VARIANTS:
        row = rows[variant.label]
        if variant.kind not in registered:
            assert row["status"] == "skipped" and f"skipping {variant.label}" in result.stdout
            continue
        assert row["status"] == "ok", row
        assert sorted(row["swap"]["layers"][i]["names"][0] for i in range(2)) == ["0", "2"]  # head stays dense
        assert 0.0 <= row["accuracy"] <= 1.0 and row["params"] > 0 and row["forward_flops"] > 0
        if all(layer["method"] == "exact" for layer in row["swap"]["layers"]):
            # an exact start keeps the trained function (up to float32 rounding flipping a near tie)
            assert abs(row["accuracy_after_swap"] - dense["accuracy"]) <= 1 / 360 + 1e-9
    assert rows["acdc-8"]["params"] < dense["params"]
    assert rows["acdc-8"]["accuracy"] > 0.3  # well above chance (0.1) after the fit and a short fine-tune


def test_demo_only_unknown_label():
    with pytest.raises(SystemExit, match="names no variant; labels: acdc-8"):
        main(["demo", "--quick", "--only", "nope", "--out", "/nonexistent-never-written"])


def test_bench_quick(tmp_path):
    pytest.importorskip("pytest_benchmark")
    pytest.importorskip("torch_dct")
    pytest.importorskip("matplotlib")
    result = run_cli("bench", "--quick", "--out", str(tmp_path), "--", "-k", "test_acdc_block_forward and not backward",
                     cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads((tmp_path / "bench.json").read_text())
    groups = {b["group"] for b in data["benchmarks"]}
    assert groups == {"acdc block forward N=64", "acdc block forward N=256"}
    assert (tmp_path / "bench_acdc_block_forward.png").stat().st_size > 0


MODEL_SOURCE = '''
import torch
from torch import nn
import structlin

def build():
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), structlin.ACDC(16, 16, depth=2))
'''


def test_report_command(tmp_path):
    (tmp_path / "demo_model.py").write_text(MODEL_SOURCE)
    result = run_cli("report", "demo_model:build", "--input-size", "4,8", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        from demo_model import build
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("demo_model", None)
    expected = str(structlin.report(build(), torch.randn(4, 8), backward=True))
    assert expected.splitlines()[0].strip() in result.stdout


def test_report_bad_arguments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "demo_model", raising=False)  # a module of that name from another test
    (tmp_path / "demo_model.py").write_text(MODEL_SOURCE + "\nNOT_A_MODEL = 3\n")
    with pytest.raises(SystemExit, match="expected MODULE:ATTR"):
        main(["report", "demo_model", "--input-size", "4,8"])
    with pytest.raises(SystemExit, match="cannot import 'no_such_module'"):
        main(["report", "no_such_module:x", "--input-size", "4,8"])
    with pytest.raises(SystemExit, match="has no attribute 'missing'"):
        main(["report", "demo_model:missing", "--input-size", "4,8"])
    with pytest.raises(SystemExit, match="not an nn.Module"):
        main(["report", "demo_model:NOT_A_MODEL", "--input-size", "4,8"])
    with pytest.raises(SystemExit, match="floating-point torch dtype"):
        main(["report", "demo_model:build", "--input-size", "4,8", "--dtype", "int64"])
    assert isinstance(load_object("demo_model:build"), nn.Sequential)
    assert _input_size("4,8") == _input_size("4x8") == (4, 8)


def test_forward_flops_counts_linear_and_structured_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), ACDC(16, 16, depth=2), nn.Linear(16, 3, bias=False))
    x = torch.randn(5, 7, 8)
    rows = 35
    relu = rows * 16
    expected = rows * (2 * 8 * 16 + 16) + relu + model[2].cost((5, 7)).forward_flops + rows * 2 * 16 * 3
    assert _forward_flops(model, x) == expected

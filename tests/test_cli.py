"""The ``structlin`` command: demo, report and bench in their quick modes (subprocesses, like a user runs them)."""

import argparse
import json
import re
import shlex
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from torch import nn

import structlin
import structlin.cli
from structlin import ACDC
from structlin.cli import _forward_flops, _input_size, build_parser, load_object, main, parse_kwargs
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


@pytest.fixture
def own_sys_path(monkeypatch):
    """``main`` moves the current directory to the end of ``sys.path``: give it a copy, restored afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))


def test_demo_only_unknown_label(own_sys_path):
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


#: modules of the standard library and of torch's dependencies that a report imports on first use
LAZY_MODULES = ("sympy", "decimal")


@pytest.mark.parametrize("launcher", ["console script", "python -m"])
def test_report_ignores_stray_modules_in_the_current_directory(tmp_path, launcher):
    """Files there named like those modules fail when imported. ``python -m`` itself puts the current directory
    first while ``import structlin`` runs, so only the console script is also safe from a stray ``numbers.py``
    (which ``import torch`` needs)."""
    for name in LAZY_MODULES + (("numbers",) if launcher == "console script" else ()):
        (tmp_path / f"{name}.py").write_text(f"raise ImportError('the stray {name}.py was imported')\n")
    (tmp_path / "demo_model.py").write_text(MODEL_SOURCE)
    if launcher == "python -m":
        command = [sys.executable, "-m", "structlin"]
    else:
        script = Path(sys.executable).with_name("structlin")
        if not script.is_file():
            pytest.skip(f"no console script next to {sys.executable}")
        command = [str(script)]
    for model in ("torch.nn:Identity", "demo_model:build"):  # installed modules win; the local one still imports
        result = subprocess.run([*command, "report", model, "--input-size", "4,8"], capture_output=True, text=True,
                                cwd=tmp_path, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "stray" not in result.stderr and "(root)" in result.stdout


@pytest.fixture
def user_directory(tmp_path, monkeypatch, own_sys_path):
    """The current directory, holding the user's model files, which are forgotten afterwards."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo_model.py").write_text(MODEL_SOURCE + "\nNOT_A_MODEL = 3\nMODEL = build()\n\n"
                                                           "def not_a_builder():\n    return 3\n")
    (tmp_path / "broken_model.py").write_text("import torch\nimport not_installed_anywhere\n")
    (tmp_path / "json.py").write_text(MODEL_SOURCE)  # the standard library's json comes first
    yield tmp_path
    for name in ("demo_model", "broken_model"):
        sys.modules.pop(name, None)


def report_argv(model: str, *extra: str, size: str = "4,8") -> list[str]:
    return ["report", model, "--input-size", size, *extra]


#: bad command lines, each with (part of) the error message it gets
BAD_ARGUMENTS = {
    "zero-threads": (["demo", "--threads", "0"], "argument --threads: expected a positive integer, got '0'"),
    "negative-threads": (["demo", "--threads", "-2"], "argument --threads: expected a positive integer, got '-2'"),
    "integer-dtype": (report_argv("demo_model:build", "--dtype", "int64"),
                      "argument --dtype: expected one of float16, half, bfloat16, float32"),
    "complex-dtype": (report_argv("demo_model:build", "--dtype", "complex64"), "argument --dtype: expected one of"),
    "class-with-arguments": (report_argv("torch.nn:Linear"),
                             "torch.nn:Linear needs arguments (in_features, out_features) and is called with none"),
    "no-colon": (report_argv("demo_model"), "expected MODULE:ATTR"),
    "no-module": (report_argv("no_such_module:x"),
                  "cannot import 'no_such_module': ModuleNotFoundError: No module named 'no_such_module'"),
    "import-fails-inside": (report_argv("broken_model:build"),
                            "cannot import 'broken_model': ModuleNotFoundError: No module named 'not_installed_"),
    "no-attribute": (report_argv("demo_model:missing"), "'demo_model' has no attribute 'missing'"),
    "shadowed-local-file": (report_argv("json:build"), "comes before ./json.py: rename the local file"),
    "not-a-module": (report_argv("demo_model:NOT_A_MODEL"), "is a int, not an nn.Module"),
    "python-module": (report_argv("torch:nn"), "torch:nn is a module, not an nn.Module"),
    "builds-no-module": (report_argv("demo_model:not_a_builder"), "demo_model:not_a_builder() returned a int"),
    "wrong-input-size": (report_argv("demo_model:build", size="4,7"),
                         "the model fails on --input-size 4,7: RuntimeError"),
    "kwargs-not-a-literal": (report_argv("torch.nn:Linear", "--kwargs", "in_features=8,out_features=x"),
                             "argument --kwargs: the value of out_features is not a Python literal: 'x' (write "
                             "strings in quotes, e.g. out_features='x')"),
    "kwargs-code-is-not-run": (report_argv("torch.nn:Linear", "--kwargs", "in_features=__import__('os').getpid()"),
                               "the value of in_features is not a Python literal"),
    "kwargs-positional": (report_argv("torch.nn:Linear", "--kwargs", "8,3"),
                          "argument --kwargs: expected NAME=VALUE pairs separated by commas"),
    "kwargs-twice": (report_argv("torch.nn:Linear", "--kwargs", "in_features=8", "--kwargs", "in_features=8"),
                     "--kwargs gives in_features twice"),
    "kwargs-missing": (report_argv("torch.nn:Linear", "--kwargs", "in_features=8"),
                       "torch.nn:Linear needs arguments (out_features) and is called with in_features: pass them "
                       "with --kwargs, e.g. --kwargs out_features=..."),
    "kwargs-unknown": (report_argv("torch.nn:Linear", "--kwargs", "in_features=8,out_features=3,width=2"),
                       "torch.nn:Linear(in_features=8, out_features=3, width=2) failed: TypeError: "),
    "kwargs-for-a-module": (report_argv("demo_model:MODEL", "--kwargs", "depth=3"),
                            "demo_model:MODEL is already an nn.Module: --kwargs is for a class or function that "
                            "builds one"),
    "negative-max-depth": (report_argv("demo_model:build", "--max-depth", "-1"),
                           "argument --max-depth: expected an integer >= 0, got '-1'"),
    "unknown-unit": (report_argv("demo_model:build", "--unit", "kilo"), "argument --unit: invalid choice: 'kilo'"),
}


@pytest.mark.parametrize("argv, message", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_bad_arguments_are_usage_errors(user_directory, capsys, argv, message):
    """A message after the command's usage and exit code 2, as argparse gives for its own checks: no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: structlin {argv[0]}") and message in err, err
    if argv[1] == "broken_model:build":
        assert f"({user_directory / 'broken_model.py'}, line 2)" in err  # where the user's module failed


def test_report_options(user_directory, capsys):
    """Constructor arguments, depth, unit: ``nn.Linear(8, 16)`` on 4 rows is 2·4·8·16 + 4·16 = 1088 FLOPs."""
    assert main(report_argv("torch.nn:Linear", "--kwargs", "in_features=8", "--kwargs", "out_features=16",
                            "--unit", "raw", "--no-backward")) == 0
    out = capsys.readouterr().out
    assert "144 params, 1088 forward FLOPs, backward not run" in out and "bwd" not in out
    assert main(report_argv("torch.nn:Conv2d", "--kwargs", "in_channels=2, out_channels=4, kernel_size=(3, 1)",
                            "--macs", "--unit", "K", size="1,2,5,5")) == 0
    out = capsys.readouterr().out
    assert "(root)  Conv2d" in out and "0.390K forward MACs" in out  # 4·3·5 outputs × 2·3 taps, + 60 bias adds / 2
    assert main(report_argv("demo_model:build", "--max-depth", "0")) == 0
    out = capsys.readouterr().out
    assert "(root)  Sequential" in out and "Linear" not in out and "ACDC" not in out


def test_parse_kwargs():
    assert parse_kwargs("in_features=64,out_features=32") == {"in_features": 64, "out_features": 32}
    assert parse_kwargs(" a=(3, 3), b='x,y', c=None, d=[1.5, -2], e={'k': True} ") == {
        "a": (3, 3), "b": "x,y", "c": None, "d": [1.5, -2], "e": {"k": True}}
    for bad in ("", "a", "a=1,,b=2", "**x", "a=1, 2", "a=b"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_kwargs(bad)


def test_bench_writes_only_where_out_says(tmp_path, monkeypatch, own_sys_path):
    """Outside a checkout, without ``--out``: ./structlin-bench in the current directory, as the help says."""
    pytest.importorskip("pytest_benchmark")
    pytest.importorskip("matplotlib")
    suite = tmp_path / "suite" / "benchmarks"
    suite.mkdir(parents=True)
    (suite / "conftest.py").write_text("def pytest_addoption(parser):\n    parser.addoption('--sizes')\n")
    (suite / "test_tiny.py").write_text(
        "import pytest\n\n@pytest.mark.benchmark(group='tiny N=64')\ndef test_tiny(benchmark):\n"
        "    benchmark(sum, [1, 2])\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["bench", "--quick", "--benchmarks", str(suite)]) == 0
    assert sorted(p.name for p in work.rglob("*")) == ["bench.json", "bench_tiny.png", "structlin-bench"]
    assert sorted(p.name for p in suite.parent.rglob("*")) == ["benchmarks", "conftest.py", "test_tiny.py"]
    help_text = build_parser()._subparsers._group_actions[0].choices["bench"].format_help()
    assert "./structlin-bench" in " ".join(help_text.split())


def test_models_load_from_the_current_directory(user_directory):
    assert isinstance(load_object("demo_model:build"), nn.Sequential)
    assert isinstance(load_object("torch.nn:Identity"), nn.Identity)
    assert _input_size("4,8") == _input_size("4x8") == _input_size("4 8") == (4, 8)


def test_the_usage_in_the_docstring_parses():
    """Each ``structlin …`` line of the module docstring, with its optional parts filled in, is accepted by the
    parser (``[--input-size …]`` repeats what is already there and is left out)."""
    lines = [line.strip() for line in structlin.cli.__doc__.splitlines() if line.strip().startswith("structlin ")]
    assert [line.split()[1] for line in lines] == ["demo", "report", "bench"]
    for line in lines:
        text = re.sub(r"\[([^\]…]*)\]", r"\1", re.sub(r"\[[^\]]*…\]", "", line))
        args = build_parser().parse_args(shlex.split(text)[1:])
        assert args.command == line.split()[1]


def test_forward_flops_counts_linear_and_structured_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), ACDC(16, 16, depth=2), nn.Linear(16, 3, bias=False))
    x = torch.randn(5, 7, 8)
    rows = 35
    relu = rows * 16
    expected = rows * (2 * 8 * 16 + 16) + relu + model[2].cost((5, 7)).forward_flops + rows * 2 * 16 * 3
    assert _forward_flops(model, x) == expected

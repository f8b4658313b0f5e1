"""Smoke tests of the example scripts: each runs its ``--quick`` mode in a subprocess and writes sane outputs.

A subprocess keeps the scripts' global settings (``torch.set_num_threads``, seeds) out of this test session.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_quick(script: str, out: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_operator_approximation_quick(tmp_path):
    pytest.importorskip("matplotlib")
    run_quick("acdc_operator_approximation.py", tmp_path)
    report = json.loads((tmp_path / "acdc_operator_approximation.json").read_text())
    assert (tmp_path / "acdc_operator_approximation.png").stat().st_size > 0

    depths = report["config"]["depths"]
    runs = report["runs"]
    assert {(r["depth"], r["permute"]) for r in runs} == {(k, p) for k in depths for p in (True, False)}
    for r in runs:
        assert r["finite"]
        assert 0.0 <= r["relative_error"] <= 1.5
        assert r["params"] == 2 * r["depth"] * report["config"]["n"]
        # training must move the cascade from its near-identity start (error ≈ √2) towards W
        assert r["relative_error"] < r["history"][0][1]
    low_rank = [report["low_rank"][str(k)] for k in depths]
    assert all(0.0 < e < 1.0 for e in low_rank)
    assert low_rank == sorted(low_rank, reverse=True)  # more rank, less error


def test_mlp_quick(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    run_quick("acdc_mlp.py", tmp_path)
    report = json.loads((tmp_path / "acdc_mlp.json").read_text())
    assert (tmp_path / "acdc_mlp.png").stat().st_size > 0

    results = report["results"]
    assert "digits" in results
    for dataset, models in results.items():
        assert set(models) == set(report["config"]["models"])
        for kind, entry in models.items():
            summary = entry["summary"]
            assert 0.0 <= summary["test_acc_mean"] <= 1.0
            assert 0.0 <= summary["train_acc_mean"] <= 1.0
            assert summary["train_seconds_mean"] > 0
            assert summary["params"] > summary["replaced_params"] > 0
            for run in entry["runs"]:
                assert math.isfinite(run["train_loss"])
        # even two epochs put every model well above chance (10 classes) on load_digits
        if dataset == "digits":
            assert all(entry["summary"]["test_acc_mean"] > 0.3 for entry in models.values())


def test_quadratic_mnist1d_quick(tmp_path):
    pytest.importorskip("mnist1d")
    pytest.importorskip("matplotlib")
    run_quick("quadratic_mnist1d.py", tmp_path)
    report = json.loads((tmp_path / "quadratic_mnist1d.json").read_text())
    assert (tmp_path / "quadratic_mnist1d.png").stat().st_size > 0

    for target, families in report["equal"].items():
        assert set(families) == {"dense", "xu", "fan", "lowrank"}
        for entry in families.values():
            summary = entry["summary"]
            assert abs(summary["params"] - int(target)) <= 0.1 * int(target)  # equal parameter counts, within 10%
            assert 0.0 <= summary["test_acc_mean"] <= 1.0 and summary["train_seconds_mean"] > 0
    (acdc,) = report["acdc"].values()
    assert set(acdc) == {"xu-acdc", "fan-acdc", "lowrank-acdc", "dense"}
    finetune = report["finetune"]["summary"]
    assert set(finetune) == {"dense", "xu", "xu-frozen", "fan", "fan-frozen", "lowrank", "lowrank-frozen"}
    for name, entry in finetune.items():
        if name != "dense":
            # from_linear keeps the trained dense model's function exactly, so its accuracy too
            assert entry["exact_start"] is True
            assert entry["before_mean"] == finetune["dense"]["before_mean"]
        assert 0.0 <= entry["after_mean"] <= 1.0


def test_prune_mlp_quick(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    run_quick("prune_mlp.py", tmp_path)
    report = json.loads((tmp_path / "prune_mlp.json").read_text())
    assert (tmp_path / "prune_mlp.png").stat().st_size > 0

    (run,) = report["runs"]
    dense = run["dense"]
    assert set(run["shrink"]) == {str(eps) for eps in report["config"]["tolerances"]}
    for eps, entry in run["shrink"].items():
        # the tolerance holds on the validation rows, before and after fine-tuning
        assert entry["val_pruned"] >= entry["val_threshold"] and entry["val_after"] >= entry["val_threshold"]
        assert entry["val_threshold"] == pytest.approx(entry["val_before"] * (1 - float(eps)))
        assert entry["params"] <= dense["params"] and entry["forward_flops"] <= dense["forward_flops"]
        assert 0.0 <= entry["test_acc"] <= 1.0
    looser = [run["shrink"][str(eps)]["params"] for eps in sorted(report["config"]["tolerances"])]
    assert looser[-1] < dense["params"]  # at 2% something goes, even from a briefly trained model
    (acdc,) = run["acdc"].values()
    assert acdc["params"] < run["shrink"]["0.01"]["params"] and len(acdc["fit_errors"]) == 2

"""Smoke test of ``examples/lm_ffn.py --quick`` (and its sweep): the corpus, the variants' sizes, the measured costs,
the per-kind learning rates and the outputs. Runs in-process (a few seconds); torch's thread count is restored."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

import structlin.training

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import lm_ffn  # noqa: E402


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_corpus_is_split_by_file_and_deterministic():
    assert set(lm_ffn.VALIDATION_FILES) < set(lm_ffn.STDLIB_FILES)
    assert len(set(lm_ffn.STDLIB_FILES)) == len(lm_ffn.STDLIB_FILES)
    first, second = lm_ffn.load_corpus(), lm_ffn.load_corpus()
    assert first.info == second.info and torch.equal(first.val, second.val)
    files, sizes = first.info["files"], first.info["bytes"]
    assert files == {"train": len(lm_ffn.STDLIB_FILES) - len(lm_ffn.VALIDATION_FILES),
                     "val": len(lm_ffn.VALIDATION_FILES)}
    assert sizes["train"] == first.train.numel() > 8 * sizes["val"] > 0
    assert first.train.dtype == torch.uint8


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="__future__.py"):
        lm_ffn.load_corpus(tmp_path)


def test_quick_run(tmp_path, restore_threads):
    result = lm_ffn.main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "lm_ffn.json").read_text())
    assert saved["summary"] == result["summary"]
    assert (tmp_path / "lm_ffn.png").stat().st_size > 0
    runs = {run["variant"]: run for run in saved["runs"]}
    assert set(runs) == {v.name for v in lm_ffn.variants(32)}
    dense = runs["dense"]
    width = saved["config"]["width"]
    for name, run in runs.items():
        assert run["steps"] == 3 and not run["diverged"] and not run["unsupported"], name
        assert [p["step"] for p in run["curve"]][::len(run["curve"]) - 1] == [0, 3]
        assert 0 < run["final_val_bpb"] < 9 and all(math.isfinite(p["val_bpb"]) for p in run["curve"])
        assert run["forward_flops"] > 0 and run["backward_flops"] > run["forward_flops"] and run["saved_bytes"] > 0
        assert run["training_flops"] == 3 * (run["forward_flops"] + run["backward_flops"])
        assert run["params"] - run["ffn_params"] == dense["params"] - dense["ffn_params"]  # only the FFN changes
        variant = next(v for v in lm_ffn.variants(width) if v.name == name)
        if variant.hidden == "match":
            assert abs(run["ffn_params"] / dense["ffn_params"] - 1) < 0.05 and run["hidden"] > 4 * width
        elif name != "dense":
            assert run["ffn_params"] < dense["ffn_params"] and run["hidden"] == 4 * width
    assert {g["lr_scale"] for g in dense["groups"]} == {1.0}
    for name in ("monarch", "acdc", "fastfood"):  # each kind's default rule is in use
        model = lm_ffn.make_ffn(runs[name]["kind"], width, runs[name]["hidden"], runs[name]["options"])
        expected = {scale for _, scale in structlin.training.lr_scales(model)}
        assert {g["lr_scale"] for g in runs[name]["groups"]} == expected | {1.0}, name
    assert len({g["lr_scale"] for g in runs["acdc"]["groups"]}) > 1


def test_quick_sweep(tmp_path, restore_threads):
    lm_ffn.main(["--quick", "--sweep", "--variants", "dense,monarch,quadratic-acdc", "--out", str(tmp_path)])
    runs = json.loads((tmp_path / "lm_sweep.json").read_text())["runs"]
    tried = [(run["variant"], run["lr"], run["lr_rule"], run["quadratic_lr_scale"]) for run in runs]
    assert [t[:2] for t in tried[:2]] == [("dense", 1e-3), ("dense", 2e-3)]
    best = min(runs[:2], key=lambda run: run["final_val_bpb"])["lr"]
    assert {t[1] for t in tried[2:]} == {best}  # the structured runs use the dense runs' best rate
    monarch = [t for t in tried if t[0] == "monarch"]
    assert len(monarch) == len(lm_ffn.SWEEP_EXPONENTS)
    assert all(f"exponent={e}" in t[2] for t, e in zip(monarch, lm_ffn.SWEEP_EXPONENTS))
    assert sorted(t[3] for t in tried if t[0] == "quadratic-acdc") == [0.1, 1.0]


def test_merge_unites_parallel_runs_and_refuses_other_settings(tmp_path, restore_threads):
    lm_ffn.main(["--quick", "--variants", "dense,monarch", "--out", str(tmp_path / "a")])
    first = json.loads((tmp_path / "a" / "lm_ffn.json").read_text())
    second = json.loads(json.dumps(first))
    second["config"]["seeds"] = [1]
    for run in second["runs"]:
        run["seed"], run["final_val_bpb"] = 1, run["final_val_bpb"] + 0.5
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "lm_ffn.json").write_text(json.dumps(second))
    merged = lm_ffn.main(["--merge", str(tmp_path / "a" / "lm_ffn.json"), str(tmp_path / "b" / "lm_ffn.json"),
                          "--out", str(tmp_path / "m")])
    assert merged["config"]["seeds"] == [0, 1] and len(merged["runs"]) == 4
    rows = {row["variant"]: row for row in merged["summary"]}
    for run in first["runs"]:
        row = rows[run["variant"]]
        assert row["seeds"] == 2 and math.isclose(row["val_bpb"], run["final_val_bpb"] + 0.25)
        assert math.isclose(row["val_bpb_sd"], 0.5 / math.sqrt(2))
    assert json.loads((tmp_path / "m" / "lm_ffn.json").read_text())["summary"] == merged["summary"]
    second["config"]["budget"] = 1.0
    (tmp_path / "b" / "lm_ffn.json").write_text(json.dumps(second))
    with pytest.raises(ValueError, match="budget"):
        lm_ffn.main(["--merge", str(tmp_path / "a" / "lm_ffn.json"), str(tmp_path / "b" / "lm_ffn.json"),
                     "--out", str(tmp_path / "m")])

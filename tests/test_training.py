"""``structlin.param_groups`` with per-kind learning-rate rules (``structlin.strategies.lr``): each parameter's
multiplier, how groups form, the quadratic scaling composed with a branch kind's rule, overrides and errors."""

import math

import pytest
import torch
from torch import nn

import structlin
from structlin import ACDC, Fastfood, LowRank, Monarch, Quadratic, param_groups
from structlin.strategies.lr import (LR_RULES, ACDCRule, Constant, FanIn, FastfoodRule, Flat, LowRankRule, LRRule,
                                     MonarchRule, resolve_lr_rule)
from structlin.training import lr_scales


def _scale_by_name(model, **options):
    names = {id(p): name for name, p in model.named_parameters()}
    return {names[id(p)]: scale for p, scale in lr_scales(model, **options)}


def _fan_in_scale(rule, in_features, fan_in):
    return rule.default_multiplier * (in_features / fan_in) ** rule.default_exponent


def test_default_rules_scale_each_factor_by_its_fan_in():
    model = nn.Sequential(nn.Linear(8, 64), Monarch(64, 48, nblocks=4), LowRank(48, 40, rank=5), ACDC(40, 40, depth=2),
                          Fastfood(40, 24, learn=("S", "G")))
    scales = _scale_by_name(model)
    _, p, q, _ = model[1].sizes  # p = 16, q = 12
    assert scales["0.weight"] == scales["0.bias"] == 1.0
    assert scales["1.R"] == pytest.approx(_fan_in_scale(MonarchRule, 64, p))
    assert scales["1.L"] == pytest.approx(_fan_in_scale(MonarchRule, 64, q))
    assert scales["2.U"] == pytest.approx(_fan_in_scale(LowRankRule, 48, 5))
    assert scales["2.V"] == pytest.approx(_fan_in_scale(LowRankRule, 48, 48))
    assert scales["3.A"] == scales["3.D"] == pytest.approx(_fan_in_scale(ACDCRule, 40, 1))
    assert scales["4.S"] == scales["4.G"] == pytest.approx(_fan_in_scale(FastfoodRule, 40, 1))
    assert "4.B" not in scales  # a fixed buffer, not a parameter
    assert all(scales[f"{i}.bias"] == 1.0 for i in range(5))
    assert list(scales) == [name for name, _ in model.named_parameters()]


def test_groups_merge_equal_multipliers_base_first_and_lr_times_scale():
    model = nn.Sequential(ACDC(16, 16, depth=2), nn.Linear(16, 16), Monarch(16, 16, nblocks=4), ACDC(16, 16))
    model[1].bias.requires_grad_(False)
    rules = {"monarch": MonarchRule(exponent=0.5)}  # ACDC keeps its default rule
    groups = param_groups(model, lr=0.01, weight_decay=0.5, rules=rules)
    scales = _scale_by_name(model, rules=rules)
    assert groups[0]["lr_scale"] == 1.0 and groups[0]["lr"] == 0.01
    assert len({g["lr_scale"] for g in groups}) == len(groups)  # one group per multiplier
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters() if p.requires_grad)  # each once, frozen out
    names = {id(p): name for name, p in model.named_parameters()}
    for group in groups:
        assert group["weight_decay"] == 0.5
        assert group["lr"] == pytest.approx(0.01 * group["lr_scale"])
        assert all(scales[names[id(p)]] == group["lr_scale"] for p in group["params"])
    # after the base group, groups follow the first appearance of their multiplier: ACDC's diagonals, then Monarch's
    assert [names[id(g["params"][0])] for g in groups[1:]] == ["0.A", "2.R"]


def test_an_sgd_step_moves_each_parameter_by_its_own_rate():
    torch.manual_seed(0)
    model = nn.Sequential(Monarch(16, 32, nblocks=2), nn.GELU(), LowRank(32, 8, rank=2)).double()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    rules = {"monarch": MonarchRule(exponent=1.0), "lowrank": LowRankRule(exponent=1.0)}
    optimizer = torch.optim.SGD(param_groups(model, lr=0.1, rules=rules))
    model(torch.randn(5, 16, dtype=torch.float64)).square().sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    optimizer.step()
    scales = _scale_by_name(model, rules=rules)
    assert len(set(scales.values())) > 2
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[name] - 0.1 * scales[name] * grads[name], rtol=1e-12, atol=1e-14)


def test_a_scheduler_keeps_the_ratios():
    model = nn.Sequential(nn.Linear(4, 16), Monarch(16, 16, nblocks=4))
    optimizer = torch.optim.AdamW(param_groups(model, lr=1e-3))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)
    optimizer.step()
    scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.5e-3 * g["lr_scale"]
                                                                       for g in optimizer.param_groups])


def test_quadratic_scaling_composes_with_the_branch_kinds_rule():
    layer = Quadratic(16, 16, form="xu", branch="acdc", depth=2)
    scales = _scale_by_name(layer, quadratic_lr_scale=0.1)
    diagonal = _fan_in_scale(ACDCRule, 16, 1)
    quadratic = {id(p) for p in layer.quadratic_parameters()}
    names = {id(p): name for name, p in layer.named_parameters()}
    for pid, name in names.items():
        kind_scale = diagonal if name.endswith((".layer.A", ".layer.D")) else 1.0
        assert scales[name] == pytest.approx(kind_scale * (0.1 if pid in quadratic else 1.0)), name
    assert any(name.endswith(".layer.A") and pid not in quadratic for pid, name in names.items())  # first order


def test_flat_rules_give_the_quadratic_split_alone():
    model = nn.Sequential(ACDC(6, 6, depth=2), Quadratic(6, 5, form="fan"), Monarch(5, 4, nblocks=2))
    groups = param_groups(model, lr=0.1, quadratic_lr_scale=0.01, rules="flat")
    quadratic = {id(p) for p in model[1].quadratic_parameters()}
    assert [g["lr"] for g in groups] == [0.1, 0.1 * 0.01]
    assert {id(p) for p in groups[1]["params"]} == quadratic
    assert len(groups[0]["params"]) + len(quadratic) == len(list(model.parameters()))


def test_overrides_by_kind_name_object_and_number():
    model = nn.Sequential(Monarch(16, 16, nblocks=4), ACDC(16, 16), LowRank(16, 16, rank=4))
    scales = _scale_by_name(model, rules={"monarch": 3.0, "acdc": "flat", "lowrank": LowRankRule(exponent=1.0)})
    assert scales["0.R"] == scales["0.L"] == scales["0.bias"] == 3.0  # a number: every parameter of the kind
    assert scales["1.A"] == scales["1.D"] == 1.0
    assert scales["2.U"] == pytest.approx(16 / 4) and scales["2.V"] == 1.0
    everywhere = _scale_by_name(model, rules=2.0)
    assert all(everywhere[name] == 2.0 for name, _ in model.named_parameters())
    mu = _scale_by_name(model, rules={"monarch": MonarchRule(exponent=1.0, multiplier=0.5)})
    assert mu["0.R"] == pytest.approx(0.5 * 16 / 4)


def test_a_user_rule_for_a_user_kind():
    @structlin.register_layer("test-scaled-lr")
    class Scaled(structlin.LowRank):
        pass

    @LR_RULES.register("test-scaled-lr")
    class HalfU(LRRule):
        def scale(self, layer, name):
            return 0.5 if name == "U" else 1.0

    try:
        model = nn.Sequential(Scaled(8, 8, 2), LowRank(8, 8, 2))
        scales = _scale_by_name(model)
        assert scales["0.U"] == 0.5 and scales["0.V"] == 1.0
        assert scales["1.U"] == pytest.approx(_fan_in_scale(LowRankRule, 8, 2))
    finally:
        structlin.unregister_layer("test-scaled-lr")
        LR_RULES.unregister("test-scaled-lr")


def test_unknown_kinds_and_plain_modules_train_at_the_base_rate():
    @structlin.register_layer("test-unruled")
    class Unruled(structlin.LowRank):
        pass

    try:
        scales = _scale_by_name(nn.Sequential(Unruled(4, 4, 2), nn.LayerNorm(4), nn.Embedding(3, 4)))
        assert set(scales.values()) == {1.0}
    finally:
        structlin.unregister_layer("test-unruled")


def test_errors_name_what_is_wrong():
    model = nn.Sequential(Monarch(8, 8, nblocks=2))
    with pytest.raises(ValueError, match="lr must be > 0"):
        param_groups(model, lr=0)
    with pytest.raises(ValueError, match="quadratic_lr_scale must be > 0"):
        param_groups(model, quadratic_lr_scale=-1)
    with pytest.raises(ValueError, match="unknown learning-rate rule 'nope'"):
        param_groups(model, rules={"monarch": "nope"})
    with pytest.raises(ValueError, match="multiplier must be > 0"):
        param_groups(model, rules={"monarch": 0.0})
    with pytest.raises(ValueError, match="learning-rate rule must be"):
        resolve_lr_rule([1, 2])

    class Negative(LRRule):
        def scale(self, layer, name):
            return -1.0

    with pytest.raises(ValueError, match="multipliers must be > 0"):
        param_groups(model, rules={"monarch": Negative()})


def test_rule_objects_resolve_and_describe_themselves():
    assert isinstance(resolve_lr_rule("flat"), Flat) and isinstance(resolve_lr_rule(2), Constant)
    assert isinstance(resolve_lr_rule("monarch"), MonarchRule) and issubclass(MonarchRule, FanIn)
    rule = MonarchRule(exponent=0.25)
    assert "exponent=0.25" in repr(rule) and math.isclose(rule.multiplier, MonarchRule.default_multiplier)


def test_default_exponents_are_the_recorded_sweeps_best():
    """The registered defaults are what ``examples/lm_ffn.py --sweep`` found best (docs/lm.md); a change to either
    without the other fails here."""
    import json
    import re
    from pathlib import Path

    runs = json.loads((Path(__file__).resolve().parent.parent / "docs" / "figures" / "lm_sweep.json").read_text())
    best = {}
    for run in runs["runs"]:
        swept = re.search(r"exponent=([0-9.]+)", run["lr_rule"])  # the rule's repr, e.g. ACDCRule(exponent=0.5, …)
        if run["variant"] in LR_RULES and swept:
            exponent = float(swept.group(1))
            if run["final_val_bpb"] < best.get(run["variant"], (math.inf,))[0]:
                best[run["variant"]] = (run["final_val_bpb"], exponent)
    assert set(best) == {"monarch", "lowrank", "acdc", "fastfood"}
    for kind, (_, exponent) in best.items():
        assert type(resolve_lr_rule(kind)).default_exponent == exponent, kind

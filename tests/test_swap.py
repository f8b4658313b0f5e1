import io
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import structlin
from structlin import ACDC, StructuredLayer, register_layer, swap, unswap
from structlin.costs import Cost
from structlin.fitting import fit_layer, relative_error
from structlin.registry import Registry
from structlin.swap import linear_adapters, unregister_linear_adapter

from helpers import assert_compiled_matches_eager


class DenseCopy(StructuredLayer):
    """A test kind that holds a full weight: ``from_linear`` reproduces any Linear exactly."""

    exact_from_linear = True

    def __init__(self, in_features, out_features, *, bias=True):
        super().__init__(in_features, out_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.normal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @classmethod
    def from_linear(cls, linear, **options):
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, **options)
        with torch.no_grad():
            layer.weight.copy_(linear.weight)
            if layer.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer.to(device=linear.weight.device, dtype=linear.weight.dtype)

    def forward(self, x):
        return nn.functional.linear(x, self.weight, self.bias)

    def to_dense(self):
        return self.weight.detach().clone()

    def cost(self, batch_shape=()):
        rows = self._rows(batch_shape)
        return Cost(self.weight.numel(), 2 * rows * self.weight.numel(), 4 * rows * self.weight.numel(), 0)


class Factored(StructuredLayer):
    """A test kind with an approximate closed-form ``from_linear``: the rank-r truncated SVD."""

    def __init__(self, in_features, out_features, *, rank=2, bias=True):
        super().__init__(in_features, out_features)
        self.u = nn.Parameter(torch.randn(out_features, rank) / rank**0.5)
        self.v = nn.Parameter(torch.randn(rank, in_features) / in_features**0.5)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @classmethod
    def from_linear(cls, linear, *, rank=2):
        layer = cls(linear.in_features, linear.out_features, rank=rank, bias=linear.bias is not None)
        layer = layer.to(dtype=linear.weight.dtype)
        u, s, vh = torch.linalg.svd(linear.weight.detach().double(), full_matrices=False)
        with torch.no_grad():
            layer.u.copy_(u[:, :rank] * s[:rank])
            layer.v.copy_(vh[:rank])
            if layer.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def forward(self, x):
        return nn.functional.linear(x @ self.v.T, self.u, self.bias)

    def to_dense(self):
        return (self.u @ self.v).detach()


@pytest.fixture
def one_thread():
    """Fits of tiny layers are many small calls: one thread avoids thread start-up costs on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def kinds():
    """Register the test kinds for one test only, so they never show up in other modules' ``available_layers()``."""
    names = {"exact": "test-swap-dense-copy", "factored": "test-swap-factored"}
    register_layer(names["exact"])(DenseCopy)
    register_layer(names["factored"])(Factored)
    yield names
    for name in names.values():
        structlin.unregister_layer(name)


class Block(nn.Module):
    """A small transformer-style block: attention projections, an MLP, a LayerNorm."""

    def __init__(self, d=16, hidden=32):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.attn = nn.ModuleDict({"q": nn.Linear(d, d), "k": nn.Linear(d, d), "v": nn.Linear(d, d), "o": nn.Linear(d, d)})
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))

    def forward(self, x):
        h = self.norm(x)
        q, k, v = self.attn["q"](h), self.attn["k"](h), self.attn["v"](h)
        weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        x = x + self.attn["o"](weights @ v)
        return x + self.mlp(self.norm(x))


class Net(nn.Module):
    def __init__(self, d=16):
        super().__init__()
        self.embed = nn.Linear(8, d)
        self.blocks = nn.ModuleList([Block(d), Block(d)])
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


ALL_LINEARS = ["embed", "head"] + [
    f"blocks.{i}.{name}" for i in range(2) for name in ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.0", "mlp.2")
]


def _linear_names(model):
    return sorted(name for name, m in model.named_modules() if type(m) is nn.Linear)


@pytest.mark.parametrize(
    "include, exclude, min_features, expected",
    [
        (None, None, 0, ALL_LINEARS),
        ("*.attn.q", None, 0, ["blocks.0.attn.q", "blocks.1.attn.q"]),
        (["blocks.1.attn.*"], "*.o", 0, ["blocks.1.attn.k", "blocks.1.attn.q", "blocks.1.attn.v"]),
        ("blocks.*.mlp.*", None, 0, ["blocks.0.mlp.0", "blocks.0.mlp.2", "blocks.1.mlp.0", "blocks.1.mlp.2"]),
        ("embed", None, 0, ["embed"]),
        (None, ["blocks.*"], 0, ["embed", "head"]),
        (None, None, 16, [n for n in ALL_LINEARS if n not in ("embed", "head")]),
        ("blocks.0.*", None, 17, []),
        # a plain name is the whole name or its ending after a dot (PEFT's target_modules)
        ("q", None, 0, ["blocks.0.attn.q", "blocks.1.attn.q"]),
        (["attn.o", "mlp.2"], None, 0, ["blocks.0.attn.o", "blocks.1.attn.o", "blocks.0.mlp.2", "blocks.1.mlp.2"]),
        ("blocks.1.attn.k", None, 0, ["blocks.1.attn.k"]),
        ("attn.q", "blocks.0.attn.q", 0, ["blocks.1.attn.q"]),
        # a regular expression on the whole name, as "re:" text or compiled
        (r"re:blocks\.\d+\.attn\.[qk]", None, 0,
         ["blocks.0.attn.q", "blocks.0.attn.k", "blocks.1.attn.q", "blocks.1.attn.k"]),
        (re.compile(r"blocks\.1\.mlp\.\d"), None, 0, ["blocks.1.mlp.0", "blocks.1.mlp.2"]),
        (None, r"re:(blocks\.\d\.)?(attn|mlp)\..*", 0, ["embed", "head"]),
    ],
)
def test_replaces_exactly_what_the_patterns_say(include, exclude, min_features, expected):
    model = Net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if not expected else "error")
        result = swap(model, "acdc", include=include, exclude=exclude, min_features=min_features)
    assert sorted(result.names) == sorted(expected)
    replaced = sorted(name for name, m in model.named_modules() if isinstance(m, ACDC))
    assert replaced == sorted(expected)
    assert _linear_names(model) == sorted(set(ALL_LINEARS) - set(expected))
    model(torch.randn(2, 5, 8))  # still runs


def test_no_match_warns():
    with pytest.warns(UserWarning, match="no linear layer matched"):
        result = swap(Net(), "acdc", min_features=1000)
    assert len(result) == 0


def test_plain_linear_only_and_shared_linear_replaced_everywhere():
    shared = nn.Linear(8, 8)
    model = nn.ModuleDict({"a": shared, "b": nn.Sequential(shared), "mha": nn.MultiheadAttention(8, 2)})
    result = swap(model, "acdc")
    assert len(result) == 1 and result.layers[0].names == ["a", "b.0"]
    assert model["a"] is model["b"][0] and isinstance(model["a"], ACDC)
    # the out_proj of MultiheadAttention is an nn.Linear subclass its parent reads directly: left alone
    assert type(model["mha"].out_proj) is not ACDC


def test_exact_kind_leaves_outputs_unchanged_float64(kinds):
    torch.manual_seed(0)
    model = Net().double()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    before = model(x)
    result = swap(model, kinds["exact"])  # preserve="auto" starts exactly where the kind can
    assert all(isinstance(m, DenseCopy) for n, m in model.named_modules() if n in ALL_LINEARS)
    assert {e.method for e in result} == {"exact"}
    assert max(e.relative_error for e in result) < 1e-15
    torch.testing.assert_close(model(x), before, rtol=0, atol=1e-14)
    assert result.params_after == result.params_before


def test_preserve_modes_choose_the_start(kinds, one_thread):
    linear_model = lambda: nn.Sequential(nn.Linear(6, 6))  # noqa: E731
    assert swap(linear_model(), "acdc").layers[0].method == "init"
    assert swap(linear_model(), "acdc", preserve="none").layers[0].method == "init"
    assert swap(linear_model(), kinds["exact"], preserve="none").layers[0].method == "init"
    assert swap(linear_model(), kinds["exact"], preserve="fit").layers[0].method == "exact"
    assert swap(linear_model(), kinds["factored"]).layers[0].method == "closed-form"  # auto uses a closed form
    assert swap(linear_model(), kinds["factored"], preserve="fit").layers[0].method == "closed-form"
    x = torch.randn(4, 6)
    fit = {"preserve": "fit", "calibration": x, "fit_iterations": 5}
    assert swap(linear_model(), kinds["factored"], **fit).layers[0].method == "closed-form+fit"
    assert swap(linear_model(), "acdc", depth=1, **fit).layers[0].method == "fit-calibration"


def test_closed_form_fit_matches_truncated_svd_and_calibration_improves_it(kinds, one_thread):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 10, dtype=torch.float64))
    linear = model[0]
    weight = linear.weight.detach().clone()
    result = swap(model, kinds["factored"], preserve="fit", rank=3)
    s = torch.linalg.svdvals(weight)
    torch.testing.assert_close(model[0].to_dense(), weight - _tail(weight, 3), rtol=0, atol=1e-12)
    assert s[3] > 0 and result.layers[0].params_after == 3 * (12 + 10) + 10

    # calibration inputs in a 3-dimensional subspace: a rank-3 layer can match the Linear exactly there
    basis = torch.randn(3, 12, dtype=torch.float64)
    calibration = torch.randn(200, 3, dtype=torch.float64) @ basis
    svd_only = swap(nn.Sequential(_copy(linear)), kinds["factored"], preserve="fit", rank=3)
    error_svd = relative_error(svd_only.layers[0].layer, linear, calibration)
    refined = swap(nn.Sequential(_copy(linear)), kinds["factored"], preserve="fit", rank=3, calibration=calibration)
    assert refined.layers[0].error_inputs == "calibration"
    assert error_svd > 1e-2
    assert refined.layers[0].relative_error < 1e-6


def _tail(weight, rank):
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    return (u[:, rank:] * s[rank:]) @ vh[rank:]


def _copy(linear):
    new = nn.Linear(linear.in_features, linear.out_features, dtype=linear.weight.dtype)
    new.load_state_dict(linear.state_dict())
    return new


def _acdc_matrix_linear(n, depth, seed):
    """An nn.Linear whose map an ACDC cascade of this depth represents exactly (built after ``manual_seed(seed)``)."""
    torch.manual_seed(seed)
    source = ACDC(n, n, depth=depth, dtype=torch.float64)
    with torch.no_grad():  # well away from the identity the fit starts near
        source.A.normal_(1.0, 0.5)
        source.D.normal_(1.0, 0.5)
        source.bias.normal_()
    linear = nn.Linear(n, n, dtype=torch.float64)
    with torch.no_grad():
        linear.weight.copy_(source.to_dense())
        linear.bias.copy_(source.bias)
    return source, linear


def test_fit_recovers_a_matrix_an_acdc_cascade_represents(one_thread):
    source, linear = _acdc_matrix_linear(16, 2, seed=3)
    fresh = ACDC(16, 16, depth=2, dtype=torch.float64)
    fresh.load_state_dict({**fresh.state_dict(), "permutations": source.permutations.clone()})
    start = relative_error(fresh, linear)
    fit_layer(fresh, linear)
    error = relative_error(fresh, linear)
    assert start > 0.1
    assert error < 1e-4
    torch.testing.assert_close(fresh.to_dense(), linear.weight.detach(), rtol=0, atol=1e-4)


def test_swap_fit_recovers_acdc_matrix_with_same_seed(one_thread):
    # swap builds replacements with torch's global RNG in module order: seeding as the source was seeded gives
    # the replacement the source's permutations
    source, linear = _acdc_matrix_linear(16, 2, seed=5)
    model = nn.Sequential(linear)
    torch.manual_seed(5)
    result = swap(model, "acdc", preserve="fit", depth=2)
    assert torch.equal(model[0].permutations, source.permutations)
    assert result.layers[0].method == "fit"
    assert result.layers[0].relative_error < 1e-4


def test_dry_run_changes_nothing(kinds):
    model = Net()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modules = dict(model.named_modules())
    rng = torch.get_rng_state()
    result = swap(model, "acdc", dry_run=True, include="blocks.0.*", depth=3)
    assert result.dry_run and sorted(result.names) == sorted(n for n in ALL_LINEARS if n.startswith("blocks.0."))
    assert dict(model.named_modules()) == modules
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(e.relative_error is None and e.layer is None for e in result)
    real = swap(Net(), "acdc", include="blocks.0.*", depth=3)
    assert [e.params_after for e in result] == [e.params_after for e in real]
    assert result.params_after == real.params_after < result.params_before
    assert "dry run" in str(result)
    with pytest.raises(ValueError, match="dry run"):
        unswap(model, result)


def test_keeps_dtype_device_mode_hooks_and_frozen(device):
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)).to(device=device, dtype=torch.float64)
    model.eval()
    model[2].requires_grad_(False)
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append("parent"))
    handle = model[0].register_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
    model[0].register_forward_pre_hook(lambda m, args: calls.append("pre"))
    result = swap(model, "acdc")
    for layer in (model[0], model[2]):
        assert isinstance(layer, ACDC) and not layer.training
        assert layer.A.dtype == torch.float64 and layer.A.device.type == device.type
    assert all(p.requires_grad for p in model[0].parameters())
    assert not any(p.requires_grad for p in model[2].parameters())
    assert result.layers[0].hooks_moved == 2 and result.layers[1].hooks_moved == 0
    model(torch.randn(2, 8, device=device, dtype=torch.float64))
    assert calls == ["pre", "ACDC", "parent"]
    handle.remove()  # the handle still reaches the moved hook
    calls.clear()
    model(torch.randn(2, 8, device=device, dtype=torch.float64))
    assert calls == ["pre", "parent"]


def test_unswap_restores_the_linears_and_their_hooks():
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(2, 5, 8)
    before = model(x)
    originals = dict(model.named_modules())
    calls = []
    model.head.register_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
    result = swap(model, "acdc", exclude="embed")
    model(x)
    assert calls == ["ACDC"]
    assert unswap(model, result) is model
    assert all(dict(model.named_modules())[name] is originals[name] for name in ALL_LINEARS)
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    assert calls == ["ACDC", "Linear"]
    with pytest.raises(RuntimeError, match="no longer holds"):
        unswap(model, result)


def test_state_dict_round_trip_and_torch_save(tmp_path, kinds):
    torch.manual_seed(0)
    model = Net()
    swap(model, "acdc", include="blocks.*.attn.*", depth=2)
    swap(model, kinds["exact"], include="blocks.*.mlp.*")
    x = torch.randn(2, 5, 8)
    expected = model(x)

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)  # other permutations and weights until the state_dict is loaded
    other = Net()
    swap(other, "acdc", include="blocks.*.attn.*", depth=2)
    swap(other, kinds["exact"], include="blocks.*.mlp.*")
    assert not torch.equal(other(x), expected)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(other(x), expected, rtol=0, atol=0)

    path = tmp_path / "model.pt"
    torch.save(model, path)
    torch.testing.assert_close(torch.load(path, weights_only=False)(x), expected, rtol=0, atol=0)


@pytest.mark.slow
def test_swapped_model_compiles(kinds):
    torch.manual_seed(0)
    model = Net().double()
    swap(model, "acdc", include="blocks.*", depth=2)
    swap(model, kinds["exact"])
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    assert_compiled_matches_eager(model, x)


def test_bad_kind_lists_valid_kinds():
    with pytest.raises(ValueError, match="unknown layer kind 'nope'") as info:
        swap(Net(), "nope")
    assert all(kind in str(info.value) for kind in structlin.available_layers())
    with pytest.raises(TypeError, match="acdc"):
        swap(Net(), ACDC)


def test_bad_pattern_names_pattern_and_close_names():
    with pytest.raises(ValueError,
                       match=r"include pattern\(s\) \['blocks\.\*\.attn\.query'\] match no linear layer") as info:
        swap(Net(), "acdc", include=["blocks.*.attn.q", "blocks.*.attn.query"])
    message = str(info.value)
    assert "close to 'blocks.*.attn.query': blocks.*.attn.q" in message
    assert "linear layers ('*' standing for indices): embed, blocks.*.attn.q" in message and "head" in message
    # a plain name of a container: say so, and how to take the layers inside
    with pytest.raises(ValueError, match=r"exclude pattern\(s\) \['mlp'\].*\n.*'mlp' names modules that are not "
                       r"linear layers: blocks\.0\.mlp \(Sequential\).*use a glob such as 'blocks\.\*\.mlp\.\*'"):
        swap(Net(), "acdc", exclude="mlp")
    # a typo of a layer swapped already: the close names are there, with their types
    model = Net()
    swap(model, "acdc", include="attn.q")
    with pytest.raises(ValueError, match=r"close to 'attn\.qq' but not linear layers: attn\.q \(ACDC\)"):
        swap(model, "acdc", include="attn.qq")
    # a glob is on the whole name
    with pytest.raises(ValueError, match=r"a glob matches the whole name: '\*\.mlp\.\*' matches 4 linear layer"):
        swap(Net(), "acdc", include="mlp.*")
    with pytest.raises(TypeError, match="at least one pattern"):
        swap(Net(), "acdc", include=[])
    with pytest.raises(TypeError, match="non-empty strings or compiled re.Pattern"):
        swap(Net(), "acdc", include=[3])
    with pytest.raises(ValueError, match="not a valid regular expression"):
        swap(Net(), "acdc", include="re:blocks.(")
    with pytest.raises(TypeError, match="options go with include"):
        swap(Net(), "acdc", exclude={"head": {}})


def test_bad_arguments():
    with pytest.raises(ValueError, match="preserve must be one of 'auto', 'fit', 'none'"):
        swap(Net(), "acdc", preserve="exact")
    with pytest.raises(ValueError, match="min_features must be an int ≥ 0"):
        swap(Net(), "acdc", min_features=-1)
    with pytest.raises(TypeError, match=r"could not build a 'acdc' layer for 'embed' \(8→16\).*colour"):
        swap(Net(), "acdc", colour="red")
    with pytest.raises(ValueError, match="wrap it"):
        swap(nn.Linear(3, 3), "acdc")
    with pytest.raises(TypeError, match="nn.Module"):
        swap(lambda x: x, "acdc")


def test_registry_unregister():
    registry = Registry("thing")
    registry.register("a")(1)
    assert registry.unregister("a") == 1 and "a" not in registry
    with pytest.raises(ValueError, match="unknown thing 'a'"):
        registry.unregister("a")


def test_result_table_and_dict():
    result = swap(Net(), "acdc", include="head")
    text = str(result)
    assert "head" in text and "16→3" in text and "model" in text
    summary = result.to_dict()
    assert summary["layers"][0]["names"] == ["head"] and summary["params_after"] == result.params_after


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run_example(script):
    result = subprocess.run([sys.executable, str(EXAMPLES / script), "--quick"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_example_swap_report():
    out = _run_example("swap_report.py")
    assert "4 linear layers → 'acdc'" in out and "1.mlp.0" in out and "fitted to calibration" in out


def test_example_swap_finetune():
    pytest.importorskip("sklearn")
    out = _run_example("swap_finetune.py")
    accuracies = [float(line.split("accuracy ")[1].split()[0].rstrip(",")) for line in out.splitlines()
                  if "accuracy " in line]
    assert len(accuracies) == 3 and accuracies[0] > 0.8
    assert accuracies[2] > accuracies[1]  # fine-tuning recovers accuracy the swap lost


def test_example_quadranet_v2():
    pytest.importorskip("sklearn")
    out = _run_example("quadranet_v2.py")
    assert "at the exact start" in out and "quadratic-term parameters" in out


def test_full_backward_hook_moves_and_moves_back():
    model = nn.Sequential(nn.Linear(8, 8))
    calls = []
    handle = model[0].register_full_backward_hook(lambda module, grad_in, grad_out: calls.append(type(module).__name__))
    result = swap(model, "acdc")
    x = torch.randn(2, 8, requires_grad=True)
    model(x).sum().backward()
    unswap(model, result)
    model(x).sum().backward()
    handle.remove()
    model(x).sum().backward()
    assert calls == ["ACDC", "Linear"]


@pytest.mark.parametrize("options", [{"form": "fan"}, {"form": "xu"}, {"form": "lowrank", "rank": 4}])
def test_quadratic_swap_is_exact_float64(options):
    torch.manual_seed(0)
    model = Net().double()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    before = model(x)
    result = swap(model, "quadratic", **options)
    assert {e.method for e in result} == {"exact"}
    torch.testing.assert_close(model(x), before, rtol=0, atol=1e-12)


@pytest.mark.parametrize("form", ["fan", "xu", "lowrank"])
def test_quadratic_swap_of_bias_free_linears_is_exact(form):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6, bias=False), nn.ReLU(), nn.Linear(6, 3, bias=False)).double()
    x = torch.randn(4, 8, dtype=torch.float64)
    before = model(x)
    result = swap(model, "quadratic", form=form, rank=2)
    assert {e.method for e in result} == {"exact"}
    assert torch.equal(model(x), before)
    assert torch.equal(model(torch.zeros(1, 8, dtype=torch.float64)), torch.zeros(1, 3, dtype=torch.float64))


def test_lowrank_fit_uses_its_closed_form():
    torch.manual_seed(0)
    result = swap(Net(), "lowrank", preserve="fit", include="blocks.*.mlp.*", rank=4)
    assert {e.method for e in result} == {"closed-form"}
    assert all(0.0 < e.relative_error < 1.0 and e.params_after < e.params_before for e in result)


def test_lowrank_auto_starts_from_its_svd():
    # preserve="auto" uses a kind's closed-form start (it used to start lowrank from a random init)
    torch.manual_seed(0)
    model = Net()
    result = swap(model, "lowrank", include="*.mlp.*", rank=4)
    assert {e.method for e in result} == {"closed-form"} and {e.start for e in result} == {"closed-form"}
    assert all(e.relative_error < 1.0 for e in result)


def test_table_says_how_each_layer_started_in_plain_words(kinds):
    text = str(swap(Net(), "acdc", include="head"))
    head = text.splitlines()[1]
    assert "start" in head and "error measured on" in head
    row = next(line for line in text.splitlines() if line.startswith("head"))
    assert "random init" in row and "random inputs" in row and "(random)" not in text
    calibrated = str(swap(Net(), kinds["exact"], include="head", calibration=torch.randn(2, 8)))
    row = next(line for line in calibrated.splitlines() if line.startswith("head"))
    assert "exact" in row and "calibration" in row


def test_per_pattern_options():
    model = Net()
    result = swap(model, "acdc", include={"attn.q": {"depth": 2}, "blocks.1.mlp.*": {"depth": 3}, "head": None},
                  depth=1)
    depths = {e.name: e.layer.depth for e in result}
    assert depths == {"blocks.0.attn.q": 2, "blocks.1.attn.q": 2, "blocks.1.mlp.0": 3, "blocks.1.mlp.2": 3, "head": 1}
    assert {e.name: e.options["depth"] for e in result} == depths
    with pytest.raises(ValueError, match=r"'blocks.0.attn.q' matches include patterns 'attn.q' and 'blocks.0.\*', "
                                         r"which give 'depth' different values \(2 and 3\)"):
        swap(Net(), "acdc", include={"attn.q": {"depth": 2}, "blocks.0.*": {"depth": 3}})
    with pytest.raises(TypeError, match="options of include pattern 'head' must be a dict"):
        swap(Net(), "acdc", include={"head": 3})


class TiedLM(nn.Module):
    """A token embedding and an output head sharing one weight, like a language model's tied head."""

    def __init__(self, vocab=50, d=16):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.body = nn.Linear(d, d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens):
        return self.head(torch.relu(self.body(self.embed(tokens))))


def test_tied_head_is_left_alone_with_a_warning_and_counted_once():
    model = TiedLM()
    total = sum(p.numel() for p in model.parameters())
    with pytest.warns(UserWarning, match=r"left alone 1 layer\(s\).*head \(shares embed\.weight\).*tied='untie'"):
        result = swap(model, "lowrank", rank=2)
    assert result.names == ["body"] and type(model.head) is nn.Linear and model.head.weight is model.embed.weight
    assert result.skipped_tied == {"head": ["embed.weight"]}
    assert result.params_before == total
    assert result.params_after == sum(p.numel() for p in model.parameters()) == total - 16 * 16 + 2 * 32


def test_untied_head_counts_the_shared_tensor_once_and_dry_run_agrees():
    model = TiedLM()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dry = swap(model, "lowrank", include="head", tied="untie", rank=2, dry_run=True)
        result = swap(model, "lowrank", include="head", tied="untie", rank=2)
    assert isinstance(model.head, structlin.LowRank) and result.layers[0].tied_to == ["embed.weight"]
    actual = sum(p.numel() for p in model.parameters())
    # the embedding keeps the shared weight, so the swap removes nothing and adds the head's factors
    assert dry.params_after == result.params_after == actual == result.params_before + 2 * (16 + 50)
    assert "untied: head no longer shares embed.weight" in str(result)
    with pytest.raises(ValueError, match="tied must be one of 'skip', 'untie'"):
        swap(TiedLM(), "acdc", tied="keep")


class TransposedLinear(nn.Module):
    """A linear map that stores its weight ``(in, out)``, as Hugging Face's Conv1D does."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(in_features, out_features))
        self.offset = nn.Parameter(torch.randn(out_features))

    def forward(self, x):
        return x @ self.kernel + self.offset


@pytest.fixture
def transposed_adapter():
    structlin.register_linear_adapter(TransposedLinear, weight=lambda m: m.kernel.T, bias=lambda m: m.offset)
    yield
    unregister_linear_adapter(TransposedLinear)


def test_registered_linear_like_type_is_swapped_exactly(transposed_adapter, kinds):
    torch.manual_seed(0)
    model = nn.Sequential(TransposedLinear(6, 5), nn.ReLU(), TransposedLinear(5, 4)).double()
    x = torch.randn(3, 6, dtype=torch.float64)
    before = model(x)
    result = swap(model, kinds["exact"])
    assert [e.replaces for e in result] == [f"{__name__}.TransposedLinear"] * 2 and result.names == ["0", "2"]
    assert [(e.in_features, e.out_features) for e in result] == [(6, 5), (5, 4)]
    torch.testing.assert_close(model(x), before, rtol=0, atol=1e-14)
    unswap(model, result)
    assert type(model[0]) is TransposedLinear


def test_unregistered_linear_like_type_is_not_a_linear_layer():
    model = nn.Sequential(TransposedLinear(6, 5), nn.Linear(5, 4))
    assert swap(model, "acdc").names == ["1"]
    with pytest.raises(ValueError, match=r"'0' names modules that are not linear layers: 0 \(TransposedLinear\)"):
        swap(nn.Sequential(TransposedLinear(6, 5), nn.Linear(5, 4)), "acdc", include="0")
    with pytest.raises(TypeError, match="a class or its qualified name"):
        structlin.register_linear_adapter(3, weight=lambda m: m.weight)


def test_bad_adapter_is_a_clear_error():
    # forgot the transpose: the weight reads (6, 5), so the bias should be (6,)
    structlin.register_linear_adapter(TransposedLinear, weight=lambda m: m.kernel, bias=lambda m: m.offset)
    try:
        with pytest.raises(TypeError, match=r"must give a bias of shape \(6,\) or None, got \(5,\)"):
            swap(nn.Sequential(TransposedLinear(6, 5)), "acdc")
        structlin.register_linear_adapter(TransposedLinear, weight=lambda m: m.kernel.T, overwrite=True)
        with pytest.raises(TypeError, match="adapter of TransposedLinear could not read the module: .*'bias'"):
            swap(nn.Sequential(TransposedLinear(6, 5)), "acdc")
    finally:
        unregister_linear_adapter(TransposedLinear)


class WithInnerLinear(StructuredLayer):
    """A test kind that holds an ``nn.Linear`` inside: a second swap must not reach into it."""

    exact_from_linear = True

    def __init__(self, in_features, out_features, *, bias=True):
        super().__init__(in_features, out_features)
        self.inner = nn.Linear(in_features, out_features, bias=bias)

    @classmethod
    def from_linear(cls, linear, **options):
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        layer.inner.load_state_dict(linear.state_dict())
        return layer

    def forward(self, x):
        return self.inner(x)


def test_parts_of_structured_layers_are_not_swapped():
    register_layer("test-swap-inner-linear")(WithInnerLinear)
    try:
        model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
        swap(model, "test-swap-inner-linear", include="0")
        assert swap(model, "acdc").names == ["1"]
        assert type(model[0].inner) is nn.Linear
    finally:
        structlin.unregister_layer("test-swap-inner-linear")


def _random_linear(n_in, n_out, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(n_in, n_out, dtype=torch.float64)


def test_fit_stops_when_the_error_stalls_and_reports_progress(one_thread):
    # a random dense matrix is far from any depth-1 cascade: the fit stalls early instead of running 500 iterations
    linear = _random_linear(32, 32)
    layer = ACDC(32, 32, depth=1, dtype=torch.float64)
    seen = []
    result = structlin.fitting.fit(layer, linear, callback=seen.append)
    assert result.stop == "stalled" and result.iterations < 100
    assert [p.iteration for p in seen] == list(range(10, result.iterations + 1, 10))
    assert [p.stop for p in seen] == [None] * (len(seen) - 1) + ["stalled"]
    assert seen[-1].relative_error == result.relative_error < result.start_error
    # the matrix fit's error is the Frobenius error of weight and bias together, which is what random inputs
    # measure on average
    with torch.no_grad():
        frobenius = torch.cat([layer.to_dense() - linear.weight, (layer.bias - linear.bias)[:, None]], 1).norm()
        scale = torch.cat([linear.weight, linear.bias[:, None]], 1).norm()
    assert result.relative_error == pytest.approx(float(frobenius / scale), rel=1e-9)
    many = structlin.fitting.random_inputs(32, 20000, dtype=torch.float64)
    assert relative_error(layer, linear, many) == pytest.approx(result.relative_error, rel=0.02)
    # stall=0 never stops for a stall: it runs to the iteration limit (or L-BFGS's own convergence)
    patient = structlin.fitting.fit(ACDC(32, 32, depth=1, dtype=torch.float64), linear, stall=0, max_iter=40)
    assert patient.stop in ("iterations", "converged") and patient.iterations <= 40


def test_fit_keeps_its_time_budget(one_thread):
    linear = _random_linear(64, 64)
    result = structlin.fitting.fit(ACDC(64, 64, depth=4, dtype=torch.float64), linear, stall=0, max_time=0.05,
                                   window=2)
    assert result.stop == "time" and result.iterations < 500


def test_fit_arguments_are_checked():
    linear = _random_linear(4, 4)
    for bad in ({"max_iter": 0}, {"window": 1.5}, {"max_time": -1}, {"stall": 1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            structlin.fitting.fit(ACDC(4, 4), linear, **bad)


def test_swap_fit_progress_verbose_and_budget(one_thread, capsys):
    model = nn.Sequential(_random_linear(16, 16, 1), nn.ReLU(), _random_linear(16, 16, 2))
    calls = []
    result = swap(model, "acdc", preserve="fit", verbose=True, fit_callback=lambda name, p: calls.append(name))
    err = capsys.readouterr().err
    assert "structlin.swap: fit 1/2 0 (16→16): iteration 10" in err and "fit 2/2 2 (16→16)" in err
    assert err.count("stopped: ") == 2
    assert set(calls) == {"0", "2"}
    assert all(e.fit is not None and e.fit.stop in ("stalled", "converged") for e in result)
    assert f"fits: 2 layers, {sum(e.fit.iterations for e in result)} iterations" in str(result)
    assert result.to_dict()["layers"][0]["fit"] == result.layers[0].fit.to_dict()

    model = nn.Sequential(_random_linear(64, 64, 1), nn.ReLU(), _random_linear(64, 64, 2))
    with pytest.warns(UserWarning, match=r"fit_budget=0.02 s cut the fits of 0, 2 short"):
        budgeted = swap(model, "acdc", preserve="fit", depth=4, fit_budget=0.02, fit_stall=0)
    assert [e.fit.stop for e in budgeted] == ["time", "time"]
    with pytest.raises(ValueError, match="fit_budget must be a positive number"):
        swap(Net(), "acdc", fit_budget=0)
    with pytest.raises(ValueError, match=r"fit_stall must be a number in \[0, 1\)"):
        swap(Net(), "acdc", fit_stall=1)


def _mixed_swap(model, kinds):
    """Every kind somewhere in ``model``: from_linear builds (lowrank, the exact test kind) and constructor
    builds (acdc with a depth strategy, fastfood)."""
    return [
        swap(model, "acdc", include="blocks.*.attn.*", depth="log2", preserve="none"),
        swap(model, "fastfood", include="blocks.0.mlp.*"),
        swap(model, "lowrank", include="blocks.1.mlp.*", rank=3),
        swap(model, kinds["exact"], include=["embed", "head"]),
    ]


def test_plan_rebuilds_the_structure_and_the_state_dict_reproduces_outputs(tmp_path, kinds):
    torch.manual_seed(0)
    model = Net()
    results = _mixed_swap(model, kinds)
    x = torch.randn(2, 5, 8)
    expected = model(x)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps([r.to_plan() for r in results]))  # a list of plans is fine: applied in order
    torch.save(model.state_dict(), tmp_path / "state.pt")

    torch.manual_seed(1)
    fresh = Net()
    applied = structlin.apply_plan(fresh, json.loads(path.read_text()))
    assert applied.preserve == "plan" and sorted(applied.names) == sorted(n for r in results for n in r.names)
    assert {e.start for e in applied} == {"from plan (load the weights)"}
    assert not torch.equal(fresh(x), expected)
    fresh.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))  # strict: every key matches
    assert torch.equal(fresh(x), expected)

    other = Net()
    structlin.apply_plan(other, path)  # a path to the JSON file
    other.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert torch.equal(other(x), expected)
    with pytest.raises(RuntimeError, match="no longer holds"):
        unswap(other, applied)  # the result of another model's apply_plan
    unswap(fresh, applied)
    assert not any(isinstance(m, StructuredLayer) for m in fresh.modules())


def test_plan_is_json_and_says_what_it_rebuilds(kinds):
    model = Net()
    plan = swap(model, "lowrank", include="head", rank=2).to_plan()
    assert plan == json.loads(json.dumps(plan))
    assert plan["format"] == "structlin-swap-plan" and plan["version"] == 1
    (entry,) = plan["layers"]
    assert entry == {"names": ["head"], "replaces": "torch.nn.modules.linear.Linear", "in_features": 16,
                     "out_features": 3, "kind": "lowrank", "build": "from_linear", "options": {"rank": 2},
                     "tensors": {"U": [3, 2], "V": [2, 16], "bias": [3]}}
    acdc = swap(model, "acdc", include="embed", depth=2).to_plan()["layers"][0]
    assert acdc["build"] == "constructor" and acdc["options"] == {"bias": True, "depth": 2}
    assert acdc["tensors"]["permutations"] == [1, 16]


def test_plan_errors_name_the_layer(kinds):
    with pytest.raises(TypeError, match=r"option activation=GELU.* of 'head' cannot be written to a JSON plan"):
        swap(Net(), "acdc", include="head", activation=nn.GELU()).to_plan()
    with pytest.raises(ValueError, match="dry run"):
        swap(Net(), "acdc", include="head", dry_run=True).to_plan()
    plan = swap(Net(), "acdc", include="head", depth=2).to_plan()
    with pytest.raises(ValueError, match=r"replaces 'head', which this model does not have"):
        structlin.apply_plan(nn.Sequential(nn.Linear(16, 3)), plan)
    wrong_shape = Net()
    wrong_shape.head = nn.Linear(16, 4)
    with pytest.raises(ValueError, match=r"replaces 'head' as a 16→3 layer, but in this model it is 16→4"):
        structlin.apply_plan(wrong_shape, plan)
    swapped = Net()
    structlin.apply_plan(swapped, plan)
    with pytest.raises(ValueError, match=r"'head'.*is a ACDC, not a linear layer.*swapped already"):
        structlin.apply_plan(swapped, plan)
    changed = json.loads(json.dumps(plan))
    changed["layers"][0]["tensors"]["A"] = [3, 16]
    with pytest.raises(ValueError, match=r"rebuilding 'head' as 'acdc'.*the plan records"):
        structlin.apply_plan(Net(), changed)
    with pytest.raises(ValueError, match="not a structlin swap plan"):
        structlin.apply_plan(Net(), {"layers": []})
    with pytest.raises(ValueError, match="version 2 plan"):
        structlin.apply_plan(Net(), {**plan, "version": 2})


def test_importing_structlin_does_not_import_transformers():
    # Hugging Face's Conv1D adapter is registered by name, so structlin never imports transformers itself
    code = "import sys, structlin; assert 'transformers' not in sys.modules; print(structlin.swap.__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "transformers.pytorch_utils.Conv1D" in linear_adapters()


# ------------------------------------------------------------------------------------------------ convolutions
class SmallCNN(nn.Module):
    """A 1-D and a 2-D stage (strides, reflect and circular padding, groups, a bias-free conv) and a linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv1d(2, 4, 3, padding=1)
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
            nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2, padding_mode="circular", bias=False), nn.ReLU(),
        )
        self.head = nn.Linear(8 * 4 * 4 + 4 * 8, 3)

    def forward(self, x):  # x: (N, 8, 8)
        image = self.features(x[:, None]).flatten(1)
        sequence = self.stem(x[:, :2]).flatten(1)
        return self.head(torch.cat([image, sequence], 1))


CONV_NAMES = ["stem", "features.0", "features.2"]


@pytest.mark.parametrize("options", [{"form": "fan"}, {"form": "xu"},
                                     {"form": "lowrank", "rank": 2, "conv_options": {"quadratic_dilation": 2}}])
def test_quadratic_swap_converts_convolutions_exactly(options):
    torch.manual_seed(0)
    model = SmallCNN()
    x = torch.randn(3, 8, 8)
    before = model(x)
    result = swap(model, "quadratic", **options)
    assert result.names == [*CONV_NAMES, "head"]
    assert {e.method for e in result} == {"exact"} and {e.relative_error for e in result} == {0.0}
    builds = {e.name: e.build for e in result}
    assert builds == {"stem": "from_conv", "features.0": "from_conv", "features.2": "from_conv", "head": "from_linear"}
    assert isinstance(model.stem, structlin.QuadraticConv1d)
    assert isinstance(model.features[2], structlin.QuadraticConv2d)
    assert torch.equal(model(x), before)  # float32, bit for bit
    assert "1 linear layer and 3 convolutions → 'quadratic'" in str(result)
    if "conv_options" in options:
        assert model.stem.quadratic_dilation == (2,) and model.head.form.name == "lowrank"
    unswap(model, result)
    assert type(model.features[0]) is nn.Conv2d and torch.equal(model(x), before)


def test_conv_swap_follows_patterns_min_features_preserve_and_dry_run():
    torch.manual_seed(0)
    model = SmallCNN()
    assert swap(SmallCNN(), "quadratic", include="features.*").names == ["features.0", "features.2"]
    assert swap(SmallCNN(), "quadratic", exclude=["stem", "head"]).names == ["features.0", "features.2"]
    assert swap(SmallCNN(), "quadratic", min_features=2).names == ["stem", "features.2", "head"]
    assert swap(SmallCNN(), "acdc", depth=2).names == ["head"]  # a kind without convolutional layers
    dry = swap(model, "quadratic", form="xu", dry_run=True)
    assert type(model.stem) is nn.Conv1d and len(dry) == 4
    assert dry.layers[0].params_after == 3 * dry.layers[0].params_before
    x = torch.randn(2, 8, 8)
    calibrated = swap(SmallCNN(), "quadratic", form="xu", preserve="none", include="features.2", calibration=x)
    (entry,) = calibrated.layers
    assert entry.method == "init" and entry.build == "constructor" and entry.error_inputs == "calibration"
    assert entry.relative_error > 0.1  # a fresh layer (its default init: a random first-order part)
    fitted = swap(SmallCNN(), "quadratic", preserve="fit", include="stem", calibration=x)
    assert fitted.layers[0].method == "exact" and fitted.layers[0].relative_error == 0.0


def test_conv_swap_keeps_dtype_mode_hooks_frozen_and_channels_last():
    torch.manual_seed(0)
    model = SmallCNN().double().eval()
    model.features[0].requires_grad_(False)
    model.features.to(memory_format=torch.channels_last)
    calls = []
    model.features[2].register_forward_hook(lambda module, args, out: calls.append(type(module).__name__))
    x = torch.randn(2, 8, 8, dtype=torch.float64)
    before = model(x)
    result = swap(model, "quadratic", form="xu")
    assert torch.equal(model(x), before) and calls == ["Conv2d", "QuadraticConv2d"]
    layer = model.features[0]
    assert not layer.training and not any(p.requires_grad for p in layer.parameters())
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert result.layers[2].hooks_moved == 1


def test_conv_swap_errors_are_clear():
    with pytest.raises(TypeError, match=r"could not build a 'quadratic' convolution for 'stem'.*branch.*conv_options"):
        swap(SmallCNN(), "quadratic", branch="acdc", depth=2)
    assert swap(SmallCNN(), "quadratic", branch="acdc", depth=2, exclude=["stem", "features.*"]).names == ["head"]
    with pytest.raises(ValueError, match="the model itself is a Conv2d"):
        swap(nn.Conv2d(2, 2, 3), "quadratic")
    with pytest.raises(TypeError, match="conv_options must be a dict"):
        swap(SmallCNN(), "quadratic", conv_options=2)


def test_conv_swap_plan_round_trips(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN()
    result = swap(model, "quadratic", form="lowrank", rank=2, conv_options={"quadratic_dilation": 2})
    with torch.no_grad():  # trained quadratic terms, so that the reload is what carries them
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 8, 8)
    expected = model(x)
    plan = json.loads(json.dumps(result.to_plan()))
    entry = plan["layers"][0]
    assert entry["replaces"] == "torch.nn.modules.conv.Conv1d" and entry["build"] == "from_conv"
    assert entry["options"] == {"form": "lowrank", "rank": 2, "quadratic_dilation": 2}
    assert entry["tensors"]["branches.x_atrous.weight_u"] == [2, 2, 3]
    torch.save(model.state_dict(), tmp_path / "state.pt")
    torch.manual_seed(1)
    fresh = SmallCNN()
    applied = structlin.apply_plan(fresh, plan)
    assert sorted(applied.names) == sorted(result.names)
    fresh.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert torch.equal(fresh(x), expected)
    unswap(fresh, applied)
    assert type(fresh.stem) is nn.Conv1d
    none = swap(SmallCNN(), "quadratic", form="xu", preserve="none", include="features.2").to_plan()
    assert none["layers"][0]["build"] == "constructor" and none["layers"][0]["options"] == {"bias": False, "form": "xu"}
    rebuilt = SmallCNN()
    structlin.apply_plan(rebuilt, none)
    assert isinstance(rebuilt.features[2], structlin.QuadraticConv2d) and rebuilt.features[2].groups == 2
    wrong = json.loads(json.dumps(plan))
    wrong["layers"][0]["build"] = "from_linear"
    with pytest.raises(ValueError, match=r"builds 'stem' with 'from_linear', but in this model it is a Conv1d"):
        structlin.apply_plan(SmallCNN(), wrong)
    changed = SmallCNN()
    changed.stem = nn.Conv1d(2, 5, 3)
    with pytest.raises(ValueError, match=r"replaces 'stem' as a 2→4 layer, but in this model it is 2→5"):
        structlin.apply_plan(changed, plan)

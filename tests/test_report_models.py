"""The report on standard layers and whole models: counts against hand-computed numbers and against
``torch.utils.flop_counter.FlopCounterMode`` (an independent counter) for matmuls, convolutions and attention;
tiny Hugging Face models built from configs (nothing downloaded) when ``transformers`` is installed."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import (FlopCounterMode, addmm_flop, baddbmm_flop, conv_backward_flop, conv_flop,
                                      sdpa_flop_count)

import structlin

WIDTH = 100  # the widest line of the default text forms

aten = torch.ops.aten


# --- FlopCounterMode, with the report's bias convention --------------------------------------------------------

def _plus_bias_add(formula):
    """``formula`` (FlopCounterMode's, on shapes) plus one FLOP per output element for the bias add (``addmm``,
    ``baddbmm``): the report counts the add, FlopCounterMode does not."""
    def counted(*args, out_shape=None, **kwargs):
        return formula.__wrapped__(*args, out_shape=out_shape, **kwargs) + math.prod(out_shape)

    return counted


def _conv_with_bias(x, w, bias, *args, out_shape=None, **kwargs):
    flops = conv_flop.__wrapped__(x, w, bias, *args, out_shape=out_shape, **kwargs)
    return flops + (math.prod(out_shape) if bias is not None else 0)


def _conv_backward_with_bias(grad, *args, out_shape=None, **kwargs):
    mask = args[9]
    bias_gradient = math.prod(grad) - grad[1] if mask[2] else 0  # the output gradient summed per channel
    return conv_backward_flop.__wrapped__(grad, *args, out_shape=out_shape, **kwargs) + bias_gradient


BIAS_ADDS = {aten.addmm: _plus_bias_add(addmm_flop), aten.baddbmm: _plus_bias_add(baddbmm_flop),
             aten.convolution: _conv_with_bias, aten.convolution_backward: _conv_backward_with_bias}


def flop_counter_mode(model, *inputs):
    """FlopCounterMode's counts per op, ``({op: forward}, {op: backward})``, for the same run as the report's:
    floating-point inputs require grad, backward from ones on every output that requires grad."""
    inputs = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    counts = []
    with FlopCounterMode(display=False, custom_mapping=BIAS_ADDS) as counter:
        out = model(*inputs)
    counts.append(counter.get_flop_counts().get("Global", {}))
    outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.requires_grad]
    with FlopCounterMode(display=False, custom_mapping=BIAS_ADDS) as counter:
        torch.autograd.backward(outputs, [torch.ones_like(t) for t in outputs])
    counts.append(counter.get_flop_counts().get("Global", {}))
    model.zero_grad(set_to_none=True)
    return tuple({str(op): flops for op, flops in c.items() if flops} for c in counts)


def assert_counts_agree(report, model, *inputs):
    """Every op FlopCounterMode has a formula for (matmuls, convolutions, attention kernels, structlin's ops)
    counts the same in the report, forward and backward."""
    forward, backward = flop_counter_mode(model, *inputs)
    known = {str(op) for op in FlopCounterMode(display=False, custom_mapping=BIAS_ADDS).flop_registry}
    ops = {op: counts for op, counts in report.by_operator().items() if op in known}
    assert {op: f for op, (f, b) in ops.items() if f} == forward
    assert {op: b for op, (f, b) in ops.items() if b} == backward
    assert forward, "no matmul or convolution ran"


# --- a CNN ------------------------------------------------------------------------------------------------------

def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 10),
    )


def test_cnn_forward_and_backward():
    """A convolution in a model with the default ``backward=True`` used to raise a TypeError."""
    model, x = small_cnn(), torch.randn(2, 3, 8, 8)
    r = structlin.report(model, x)
    assert not r.unsupported()
    # conv 0: each of the 2·8·8·8 outputs takes 3·3·3 multiply-adds, + the bias; backward: the input and the
    # weight gradients repeat them, the bias gradient sums 2·8·8 values per channel
    conv0 = 2 * (2 * 8 * 8 * 8) * (3 * 3 * 3)
    assert r.row("0").forward_flops == conv0 + 2 * 8 * 8 * 8
    assert r.row("0").backward_flops == 2 * conv0 + 2 * 8 * 8 * 8 - 8
    conv4 = 2 * (2 * 16 * 4 * 4) * (8 * 3 * 3)
    assert (r.row("4").forward_flops, r.row("4").backward_flops) == (conv4, 2 * conv4)
    # max pool 2×2: 3 comparisons per output; its backward adds each output gradient into the input gradient
    assert (r.row("3").forward_flops, r.row("3").backward_flops) == (3 * 2 * 8 * 4 * 4, 2 * 8 * 4 * 4)
    assert r.row("6").forward_flops == 2 * 16 * 4 * 4  # the mean of 16 values: 15 adds and a division
    assert r.total.backward_flops > r.total.forward_flops > conv0 + conv4
    assert_counts_agree(r, model, x)


def test_cnn_in_evaluation_mode_and_forward_only():
    model, x = small_cnn().eval(), torch.randn(2, 3, 8, 8)
    r = structlin.report(model, x, backward=False)
    assert r.total.backward_flops == 0 and not r.unsupported()
    assert r.row("1").forward_flops == 4 * 2 * 8 * 8 * 8 + 2 * 8  # centring, scaling, affine; 1/σ per channel
    forward, _ = flop_counter_mode(model, x)
    assert forward == {op: f for op, (f, b) in r.by_operator().items() if op in forward}


#: convolutions: (module, input shape)
CONVOLUTIONS = {
    "conv1d-strided": (lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1), (2, 4, 16)),
    "conv2d-dilated": (lambda: nn.Conv2d(4, 6, (3, 5), dilation=2, padding=1), (2, 4, 12, 12)),
    "conv3d": (lambda: nn.Conv3d(2, 4, 3), (1, 2, 5, 5, 5)),
    "conv-transpose1d": (lambda: nn.ConvTranspose1d(4, 6, 3, stride=2), (2, 4, 7)),
    "conv-transpose2d": (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, output_padding=1), (2, 4, 5, 5)),
    "conv-transpose3d": (lambda: nn.ConvTranspose3d(2, 3, 2, stride=2), (1, 2, 3, 3, 3)),
    "conv2d-grouped": (lambda: nn.Conv2d(4, 8, 3, groups=2), (2, 4, 8, 8)),
    "conv2d-depthwise": (lambda: nn.Conv2d(4, 4, 3, groups=4, bias=False), (2, 4, 8, 8)),
    "conv-transpose2d-grouped": (lambda: nn.ConvTranspose2d(4, 6, 3, groups=2), (2, 4, 5, 5)),
}


@pytest.mark.parametrize("name", CONVOLUTIONS)
def test_convolutions(name):
    build, shape = CONVOLUTIONS[name]
    torch.manual_seed(0)
    conv, x = build(), torch.randn(*shape)
    y = conv(x)
    r = structlin.report(conv, x)
    kernel = math.prod(conv.kernel_size)
    if conv.transposed:  # every input element meets C_out/groups kernels
        multiply_adds = x.numel() * conv.out_channels // conv.groups * kernel
    else:  # every output element sums C_in/groups kernels
        multiply_adds = y.numel() * conv.in_channels // conv.groups * kernel
    bias = conv.bias is not None
    assert r.total.forward_flops == 2 * multiply_adds + (y.numel() if bias else 0)
    assert r.total.backward_flops == 2 * 2 * multiply_adds + (y.numel() - conv.out_channels if bias else 0)
    if conv.groups == 1:  # FlopCounterMode counts a grouped convolution's weight gradient `groups` times over
        assert_counts_agree(r, conv, x)


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


#: standard layers, each with a hand count: (module, input, forward FLOPs, backward FLOPs)
LAYERS = {
    # pooling: max k − 1 comparisons per output, backward 1; average k, backward k + 1
    "max-pool2d": (lambda: nn.MaxPool2d(2), (2, 3, 8, 8), 96 * 3, 96),
    "max-pool1d-overlapping": (lambda: nn.MaxPool1d(3, stride=1), (2, 3, 10), 48 * 2, 48),
    "max-pool3d": (lambda: nn.MaxPool3d(2), (1, 2, 4, 4, 4), 16 * 7, 16),
    "avg-pool2d": (lambda: nn.AvgPool2d(2), (2, 3, 8, 8), 96 * 4, 96 * 5),
    "avg-pool3d": (lambda: nn.AvgPool3d(2), (1, 2, 4, 4, 4), 16 * 8, 16 * 9),
    # adaptive 8 → 3: windows [0, 3), [2, 6), [5, 8) cover 10 positions per dimension
    "adaptive-avg-pool2d": (lambda: nn.AdaptiveAvgPool2d(3), (1, 2, 8, 8), 2 * 100, 2 * 100 + 18),
    "adaptive-max-pool2d": (lambda: nn.AdaptiveMaxPool2d(3), (1, 2, 8, 8), 2 * 100 - 18, 18),
    # norms: 5 per element + affine 2, 4 per group; backward 11 + 2 + 1 per element
    "group-norm": (lambda: nn.GroupNorm(2, 4), (2, 4, 3, 3), 7 * 72 + 4 * 4, 14 * 72),
    # resampling and padding
    "upsample-nearest": (lambda: nn.Upsample(scale_factor=2), (1, 2, 3, 3), 0, 72 - 18),
    "upsample-bilinear": (lambda: nn.Upsample(scale_factor=2, mode="bilinear"), (1, 2, 3, 3), 7 * 72, 8 * 72),
    "reflection-pad2d": (lambda: nn.ReflectionPad2d(1), (1, 2, 3, 3), 0, 50 - 18),
    "replication-pad3d": (lambda: nn.ReplicationPad3d(1), (1, 2, 2, 2, 2), 0, 128 - 16),
    "pixel-shuffle": (lambda: nn.PixelShuffle(2), (1, 8, 3, 3), 0, 0),
    # attention: two matmuls of 2·(2·4·8·4) FLOPs; backward five (FlopCounterMode's count), and the engine's
    # two sums of the three gradients of x (query, key and value)
    "scaled-dot-product-attention": (lambda: _Lambda(lambda x: F.scaled_dot_product_attention(x, x, x)),
                                     (1, 2, 4, 8), 2 * 512, 5 * 512 + 2 * 64),
}


@pytest.mark.parametrize("name", LAYERS)
def test_standard_layers(name):
    build, shape, forward, backward = LAYERS[name]
    r = structlin.report(build(), torch.randn(*shape))
    assert not r.unsupported()
    assert (r.total.forward_flops, r.total.backward_flops) == (forward, backward)


def test_embeddings():
    ids = torch.tensor([[1, 2, 3], [4, 5, 1]])
    r = structlin.report(nn.Embedding(10, 5), ids)
    assert (r.total.forward_flops, r.total.backward_flops) == (0, 6 * 5)  # a lookup; each row's gradient added
    r = structlin.report(nn.EmbeddingBag(10, 5, mode="mean"), ids)  # 2 bags of 3: 2 adds and a division per bag
    assert (r.total.forward_flops, r.total.backward_flops) == (2 * (2 + 1) * 5, 2 * 6 * 5)
    assert not r.unsupported()


#: more standard layers, each with no op left uncounted
MORE_LAYERS = {
    "batch-norm3d": (nn.BatchNorm3d(2), (2, 2, 3, 3, 3)),
    "instance-norm2d": (nn.InstanceNorm2d(3, affine=True), (2, 3, 4, 4)),
    "layer-norm": (nn.LayerNorm(8), (2, 3, 8)),
    "rms-norm": (nn.RMSNorm(8), (2, 3, 8)),
    "local-response-norm": (nn.LocalResponseNorm(2), (2, 4, 3, 3)),
    "lp-pool2d": (nn.LPPool2d(2, 2), (2, 3, 4, 4)),
    "fractional-max-pool2d": (nn.FractionalMaxPool2d(2, output_size=3), (1, 2, 8, 8)),
    "adaptive-avg-pool3d": (nn.AdaptiveAvgPool3d(2), (1, 2, 5, 5, 5)),
    "adaptive-max-pool1d": (nn.AdaptiveMaxPool1d(3), (2, 3, 10)),
    "multihead-attention": (_Lambda(lambda x, m=nn.MultiheadAttention(8, 2, batch_first=True): m(x, x, x)[0]),
                            (2, 5, 8)),
    "transformer-encoder-layer": (nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), (2, 5, 8)),
    "causal-attention": (_Lambda(lambda x: F.scaled_dot_product_attention(x, x, x, is_causal=True)), (2, 2, 5, 8)),
    "upsample-trilinear": (nn.Upsample(scale_factor=2, mode="trilinear"), (1, 2, 2, 2, 2)),
    "activations": (nn.Sequential(nn.PReLU(), nn.GLU(), nn.Hardshrink(), nn.Softshrink(), nn.RReLU(), nn.Mish(),
                                  nn.SELU(), nn.LogSoftmax(-1)), (2, 3, 8)),
    "gru": (nn.GRU(8, 8, batch_first=True), (2, 4, 8)),
    "lstm-stacked-bidirectional": (nn.LSTM(8, 4, num_layers=2, bidirectional=True), (3, 2, 8)),
    "losses": (_Lambda(lambda x: F.mse_loss(x, torch.zeros_like(x)) + F.cross_entropy(x, torch.tensor([1, 0]))),
               (2, 5)),
}


@pytest.mark.parametrize("name", MORE_LAYERS)
def test_every_op_of_standard_layers_is_counted(name):
    module, shape = MORE_LAYERS[name]
    r = structlin.report(module, torch.randn(*shape))
    assert not r.unsupported()
    assert r.total.forward_flops > 0 and r.total.backward_flops > 0


class _WithStates(nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, h, c):
        return self.rnn(x, (h, c))


@pytest.mark.parametrize("options", [{}, {"bias": False}, {"batch_first": True}],
                         ids=["default", "no-bias", "batch-first"])
def test_lstm_kernel_counts_as_its_decomposed_cell(options):
    """In float32 on the CPU an LSTM layer is one fused kernel; in float64 it runs as matmuls and pointwise ops.
    Both count the same, forward and backward (the initial states are inputs, so both compute their gradients)."""
    torch.manual_seed(0)
    model = _WithStates(nn.LSTM(6, 5, **options))
    batch = 3 if options.get("batch_first") else 4  # x is (batch, steps, 6) or (steps, batch, 6)
    x, h, c = torch.randn(3, 4, 6), torch.randn(1, batch, 5), torch.randn(1, batch, 5)
    fused = structlin.report(model, x, h, c)
    decomposed = structlin.report(model.double(), x.double(), h.double(), c.double())
    assert "aten.mkldnn_rnn_layer" in fused.by_operator() and "aten.mkldnn_rnn_layer" not in decomposed.by_operator()
    assert not fused.unsupported() and not decomposed.unsupported()
    assert fused.total.forward_flops == decomposed.total.forward_flops
    assert fused.total.backward_flops == decomposed.total.backward_flops


class _Experts(nn.Module):
    """A mixture-of-experts layer as Hugging Face writes it: top-2 routing, a histogram of the experts' loads,
    one grouped matmul for the rows each expert got."""

    def __init__(self):
        super().__init__()
        self.router = nn.Linear(8, 3, bias=False)
        self.weight = nn.Parameter(torch.randn(3, 4, 8))  # 3 experts, 8 → 4

    def forward(self, x):
        scores = self.router(x)
        top = torch.topk(scores, 2, dim=-1).values
        load = torch.histc(scores, bins=3, min=-1, max=1)
        offs = torch.tensor([3, 7, 9], dtype=torch.int32)  # experts 0, 1, 2 take rows 0-2, 3-6, 7-8
        return torch._grouped_mm(x, self.weight.transpose(-2, -1), offs=offs), top, load


def test_mixture_of_experts_ops():
    r = structlin.report(_Experts(), torch.randn(12, 8))
    assert not r.unsupported()
    ops = r.by_operator()
    assert ops["aten._grouped_mm"] == (2 * 9 * 8 * 4, 2 * 2 * 9 * 8 * 4)  # 9 routed rows; input and weight grads
    assert ops["aten.topk"][0] == 12 * (3 - 1 + (2 - 1) * 2)  # per row of 3: the max, then the next in ⌈log₂ 3⌉
    assert ops["aten.histc"][0] == 2 * 12 * 3


def test_integer_ops_count_zero_and_are_not_unsupported():
    """Position ids from the cumulative sum of an integer mask (as Hugging Face models compute them)."""
    def positions(x):
        mask = (x[..., 0] > 0).long()
        return x * (mask.cumsum(-1) - 1).unsqueeze(-1)

    r = structlin.report(_Lambda(positions), torch.randn(2, 6, 4))
    assert not r.unsupported()
    # float work only: the comparison (12), the product (48), its backward (48)
    assert (r.total.forward_flops, r.total.backward_flops) == (12 + 48, 48)


def test_structured_layers_in_a_cnn_agree_with_flop_counter_mode():
    """structlin registers its ops' formulas with torch.utils.flop_counter: both counters see the same."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), structlin.ACDC(144, 64, depth=2), nn.ReLU(),
                          structlin.Fastfood(64, 32), nn.Linear(32, 10))
    x = torch.randn(2, 3, 8, 8)
    r = structlin.report(model, x)
    assert not r.unsupported()
    assert r.row("2").kind == "acdc" and r.row("2").dense.params == 144 * 64 + 64
    assert r.row("2").cost == model[2].cost((2,)) and r.row("4").cost == model[4].cost((2,))
    assert_counts_agree(r, model, x)


# --- Hugging Face models built from small configs ----------------------------------------------------------------

def _bert():
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                                vocab_size=100, max_position_embeddings=64))


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=2, vocab_size=100, n_positions=64,
                                      bos_token_id=0, eos_token_id=0, use_cache=False))


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                        num_key_value_heads=1, intermediate_size=128, vocab_size=100,
                                        max_position_embeddings=64, use_cache=False))


HF_MODELS = {"bert": _bert, "gpt2": _gpt2, "llama": _llama}
BATCH, SEQUENCE = 2, 16


@pytest.fixture(scope="module", params=list(HF_MODELS))
def hf_model(request):
    """``(name, model, input_ids, report)``, the report forward and backward."""
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = HF_MODELS[request.param]()
    ids = torch.randint(0, 100, (BATCH, SEQUENCE))
    return request.param, model, ids, structlin.report(model, ids)


def test_hf_report_forward_and_backward(hf_model):
    name, model, ids, r = hf_model
    assert [row.name for row in r.rows] == [n for n, _ in model.named_modules()]
    assert r.total.params == sum(p.numel() for p in model.parameters())
    assert r.total.backward_flops > r.total.forward_flops > 0 and r.total.saved_bytes > 0
    assert r.unsupported() == {}  # softmax with masked rows, integer mask and position arithmetic: all counted


def test_hf_matmul_flops_equal_flop_counter_mode(hf_model):
    name, model, ids, r = hf_model
    assert_counts_agree(r, model, ids)
    attention = r.by_operator().get("aten._scaled_dot_product_flash_attention_for_cpu")
    if attention is not None:  # FlopCounterMode has no formula for the CPU kernel; its counts for the others
        heads, head_dim = model.config.num_attention_heads, 64 // model.config.num_attention_heads
        query = (BATCH, heads, SEQUENCE, head_dim)
        key = (BATCH, model.config.num_key_value_heads, SEQUENCE, head_dim)
        layers = model.config.num_hidden_layers
        assert attention[0] == layers * sdpa_flop_count(query, key, key)


def test_hf_text_fits_in_100_columns(hf_model):
    name, model, ids, r = hf_model
    for text in (str(r), r.format(max_depth=2), str(r.with_options(scale="raw")), str(r.compare(r))):
        assert max(len(line) for line in text.splitlines()) <= WIDTH, text
    assert len(str(r).splitlines()) > len(r.rows)  # every module has a row


@torch.library.custom_op("structlin_report_models::opaque", mutates_args=())
def opaque(x: torch.Tensor) -> torch.Tensor:
    """An op with no FLOP formula, in the forward and in the backward."""
    return x.clone()


@opaque.register_fake
def _(x):
    return torch.empty_like(x)


opaque.register_autograd(lambda ctx, grad: opaque(grad))


def test_hf_unsupported_ops_are_listed_once_and_mark_their_rows():
    pytest.importorskip("transformers")
    model = _gpt2()
    for block in model.transformer.h:
        block.mlp.act = _Lambda(opaque)
    r = structlin.report(model, torch.randint(0, 100, (BATCH, SEQUENCE)))
    assert r.unsupported() == {"structlin_report_models.opaque": 4}  # 2 layers, forward and backward
    assert r.marked() == ["transformer.h.0.mlp.act", "transformer.h.1.mlp.act"]
    assert r.marked(max_depth=3) == ["transformer.h.0", "transformer.h.1"]  # folded: the deepest row shown
    assert not r.row("").flops_known and r.row("lm_head").flops_known
    text = r.format(max_depth=3)
    table = text.split("\n? = ")[0]
    assert [line.split()[0] for line in table.splitlines() if "?" in line] == ["0", "1"]
    assert text.count("structlin_report_models.opaque (4 calls)") == 1
    assert max(len(line) for line in text.splitlines()) <= WIDTH

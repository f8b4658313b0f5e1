"""Swapping the FFN layers of tiny Hugging Face models (BERT, GPT-2 with its Conv1D layers, Llama) built from
configs: nothing is downloaded. Each kind in ``structlin.available_layers()``: forward and backward, exact starts,
``torch.compile`` parity, the save_pretrained → from_pretrained → apply_plan → load recipe, training, tied heads."""

import json
import warnings

import pytest
import torch
from torch import nn

import structlin
from structlin import StructuredLayer
from structlin.swap import PLAN_FILE

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

VOCAB, SEQ = 100, 7
# the options each kind needs (or is tested with); a kind registered later with none listed is built with none
KIND_OPTIONS = {"acdc": {"depth": 2}, "fastfood": {}, "lowrank": {"rank": 4}, "quadratic": {"form": "fan"}}
KINDS = structlin.available_layers()


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is as fast, and far steadier on a busy machine, than several."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _bert():
    config = transformers.BertConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                     vocab_size=VOCAB, max_position_embeddings=32, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    return transformers.BertModel(config)


def _gpt2():
    config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=VOCAB, n_positions=32, resid_pdrop=0.0,
                                     embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


def _llama():
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                      num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=32,
                                      bos_token_id=0, eos_token_id=0)
    return transformers.LlamaForCausalLM(config)


def _names(prefix, parts):
    return [f"{prefix}.{i}.{part}" for i in range(2) for part in parts]


# model → (builder, FFN include patterns by name, exclude patterns, the FFN layers' qualified names)
MODELS = {
    "bert": (_bert, ["intermediate.dense", "output.dense"], ["attention.output.dense"],
             _names("encoder.layer", ["intermediate.dense", "output.dense"])),
    "gpt2": (_gpt2, ["mlp.c_fc", "mlp.c_proj"], None, _names("transformer.h", ["mlp.c_fc", "mlp.c_proj"])),
    "llama": (_llama, ["gate_proj", "up_proj", "down_proj"], None,
              _names("model.layers", ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"])),
}


def build(name, dtype=torch.float32):
    torch.manual_seed(0)
    return MODELS[name][0]().to(dtype).eval()


def ids():
    return torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(1))


def output(model, tokens):
    out = model(input_ids=tokens)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def swap_ffn(model, name, kind, **extra):
    _, include, exclude, _ = MODELS[name]
    return structlin.swap(model, kind, include=include, exclude=exclude, **{**KIND_OPTIONS.get(kind, {}), **extra})


def ffn_names(name):
    return MODELS[name][3]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_ffn_layers_swap_forward_backward(name, kind):
    model = build(name)
    tokens = ids()
    before = output(model, tokens).detach()
    result = swap_ffn(model, name, kind)
    expected = ffn_names(name)
    assert sorted(result.names) == sorted(expected)
    assert all(isinstance(model.get_submodule(n), StructuredLayer) for n in expected)
    y = output(model, tokens)
    assert y.shape == before.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    for n in expected:
        grads = [p.grad for p in model.get_submodule(n).parameters()]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    if {e.method for e in result} == {"exact"}:
        torch.testing.assert_close(y, before, rtol=1e-5, atol=1e-5)


def test_gpt2_conv1d_layers_are_swapped_exactly_float64():
    # GPT-2's MLP layers are Conv1D (weight stored (in, out)): the issue's include pattern matched nothing
    model = build("gpt2", torch.float64)
    tokens = ids()
    before = output(model, tokens)
    result = structlin.swap(model, "quadratic", include=["transformer.h.*.mlp.*"], form="xu")
    assert result.names == [f"transformer.h.{i}.mlp.{p}" for i in range(2) for p in ("c_fc", "c_proj")]
    assert {e.replaces for e in result} == {"transformers.pytorch_utils.Conv1D"}
    assert {e.method for e in result} == {"exact"}
    assert max(e.relative_error for e in result) < 1e-14
    torch.testing.assert_close(output(model, tokens), before, rtol=0, atol=1e-12)
    structlin.unswap(model, result)
    assert type(model.transformer.h[0].mlp.c_fc).__name__ == "Conv1D"
    assert torch.equal(output(model, tokens), before)


def test_gpt2_conv1d_layers_fit_on_a_calibration_batch():
    # the calibration pass captures what each Conv1D receives; lowrank refines its SVD start on it
    tokens = ids()
    results = {}
    for calibration in (None, {"input_ids": tokens}):
        model = build("gpt2", torch.float64)
        results[calibration is None] = structlin.swap(model, "lowrank", include="mlp.c_fc", rank=2, preserve="fit",
                                                      calibration=calibration, fit_iterations=50)
    svd, refined = results[True], results[False]
    assert {e.method for e in svd} == {"closed-form"} and {e.method for e in refined} == {"closed-form+fit"}
    assert {e.error_inputs for e in refined} == {"calibration"}
    assert all(e.fit.relative_error < e.fit.start_error for e in refined)


def test_gpt2_tied_lm_head_is_left_alone_with_a_warning():
    model = build("gpt2")
    wte = model.transformer.wte.weight
    with pytest.warns(UserWarning, match=r"lm_head \(shares transformer\.wte\.weight\).*tied='untie'"):
        result = structlin.swap(model, "acdc")
    assert type(model.lm_head) is nn.Linear and model.lm_head.weight is wte
    assert "lm_head" not in result.names and result.skipped_tied == {"lm_head": ["transformer.wte.weight"]}
    assert len(result) == 8  # every Conv1D
    assert result.params_after == sum(p.numel() for p in model.parameters())
    assert "left alone (weights tied): lm_head" in str(result)


def test_gpt2_untie_replaces_the_head_and_counts_the_embedding_once():
    model = build("gpt2")
    wte = model.transformer.wte.weight.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dry = structlin.swap(model, "lowrank", include="lm_head", tied="untie", rank=4, dry_run=True)
        result = structlin.swap(model, "lowrank", include="lm_head", tied="untie", rank=4)
    assert isinstance(model.lm_head, structlin.LowRank) and torch.equal(model.transformer.wte.weight, wte)
    assert result.layers[0].tied_to == ["transformer.wte.weight"] and result.layers[0].method == "closed-form"
    total = sum(p.numel() for p in model.parameters())
    # the tied weight stays in the model (the embedding keeps it): nothing is removed, the low-rank head is added
    assert result.params_after == dry.params_after == total == result.params_before + 4 * (32 + VOCAB)


def _round_trip(model, result, tmp_path, name):
    """The documented recipe: save_pretrained + the plan; from_pretrained; apply_plan; load the saved tensors."""
    model.save_pretrained(tmp_path)
    (tmp_path / PLAN_FILE).write_text(json.dumps(result.to_plan()))
    fresh = type(model).from_pretrained(tmp_path)  # dense FFN layers; the swapped tensors are "unexpected"
    structlin.apply_plan(fresh, tmp_path / PLAN_FILE)
    state = {}
    for path in sorted(tmp_path.glob("*.safetensors")):
        state.update(safetensors_torch.load_file(path))
    loaded = fresh.load_state_dict(state, strict=False)
    assert not loaded.unexpected_keys
    tied = {"lm_head.weight"} if name == "gpt2" else set()  # GPT-2's head is the embedding, saved once
    assert set(loaded.missing_keys) == tied
    return fresh.eval()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_plan_round_trip_through_save_pretrained(tmp_path, name, kind):
    model = build(name)
    result = swap_ffn(model, name, kind)
    tokens = ids()
    expected = output(model, tokens)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the load report lists the swapped keys as unexpected
    try:
        fresh = _round_trip(model, result, tmp_path, name)
    finally:
        transformers.logging.set_verbosity(verbosity)
    assert sorted(n for n, m in fresh.named_modules() if isinstance(m, StructuredLayer)) == sorted(result.names)
    assert torch.equal(output(fresh, tokens), expected)


@pytest.mark.parametrize("name", list(MODELS))
def test_twenty_adamw_steps_lower_the_loss(name):
    model = build(name).train()
    names = ffn_names(name)
    for i, layer in enumerate(names):  # every kind, one FFN layer after another
        kind = KINDS[i % len(KINDS)]
        structlin.swap(model, kind, include=layer, **KIND_OPTIONS.get(kind, {}))
    tokens = ids()
    target = torch.randn(2, SEQ, 32, generator=torch.Generator().manual_seed(2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        if name == "bert":
            loss = (model(input_ids=tokens).last_hidden_state - target).square().mean()
        else:
            loss = model(input_ids=tokens, labels=tokens).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_compiled_swapped_model_matches_eager(name):
    """``torch.compile(fullgraph=True, backend="aot_eager")`` of the whole model with every kind in its FFN layers:
    HF's BERT, GPT-2 and Llama trace without graph breaks."""
    model = build(name, torch.float64)
    for i, layer in enumerate(ffn_names(name)):
        kind = KINDS[i % len(KINDS)]
        structlin.swap(model, kind, include=layer, **KIND_OPTIONS.get(kind, {}))
    tokens = ids()
    torch._dynamo.reset()
    compiled = torch.compile(lambda t: output(model, t), backend="aot_eager", fullgraph=True)
    results = []
    for f in (compiled, lambda t: output(model, t)):
        model.zero_grad()
        y = f(tokens)
        y.square().sum().backward()
        results.append((y.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (y, grads), (y_eager, grads_eager) = results
    torch.testing.assert_close(y, y_eager, rtol=1e-10, atol=1e-10)
    assert len(grads) == len(grads_eager) > 0
    for g, g_eager in zip(grads, grads_eager):
        torch.testing.assert_close(g, g_eager, rtol=1e-10, atol=1e-10)

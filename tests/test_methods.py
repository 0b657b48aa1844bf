"""Each PEFT method on the tiny model: exact trainable counts, loss goes down, the adapter
reloads with plain peft and gives the same logits."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_cfg
from peft import PeftModel

from ccexp.config import validate
from ccexp.data.batching import EncodedDataset, collate, completion_nll
from ccexp.methods import METHODS
from ccexp.models import load_model

# tiny: hidden 64, 4 heads of 16, 2 kv heads -> q,o: 64->64, k,v: 64->32; 2 layers.
LORA_R16 = 2 * 16 * ((64 + 64) * 2 + (64 + 32) * 2)
EXPECTED_TRAINABLE = {"lora": LORA_R16, "qlora": LORA_R16, "prompt_tuning": 20 * 64}
# A random tiny model needs its own step sizes: a soft prompt moves slowly, LoRA on a
# random base diverges above ~5e-3.
TEST_LR = {"lora": 2e-3, "qlora": 2e-3, "prompt_tuning": 0.3}


def _batch(tokenizer, n=4):
    examples = [{"messages": [{"role": "system", "content": "Answer in JSON."},
                              {"role": "user", "content": f"Rate call {i}: the agent was polite."},
                              {"role": "assistant", "content": f'{{"csat": {1 + i % 5}}}'}]} for i in range(n)]
    return collate(EncodedDataset(tokenizer, examples, 256).items, tokenizer.pad_token_id)


def _spec(method, tiny_dir):
    rc = validate(compose_cfg("model=tiny", f"method={method}"))
    return rc, METHODS[method](rc.method, rc.model, str(tiny_dir), torch.float32)


def _wrapped(method, tiny_dir):
    rc, spec = _spec(method, tiny_dir)
    return rc, spec.wrap(load_model(tiny_dir, torch.float32, spec.quantization_config))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_trains_and_reloads(method, tiny_dir, tokenizer, tmp_path):
    torch.manual_seed(0)
    _, model = _wrapped(method, tiny_dir)
    trainable, _ = model.get_nb_trainable_parameters()
    assert trainable == EXPECTED_TRAINABLE[method]

    batch = _batch(tokenizer)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=TEST_LR[method])
    losses = []
    for _ in range(10):
        nll, count = completion_nll(model, batch)
        loss = nll / count
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    # A random tiny model starts at ln(vocab) ~ 10.8; a real decrease is tenths of a nat here.
    assert losses[-1] < losses[0] - 0.05 and min(losses[-3:]) < min(losses[:3]), losses

    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_config.json").is_file() and (tmp_path / "adapter_model.safetensors").is_file()
    model.eval()
    _, spec = _spec(method, tiny_dir)
    reloaded = PeftModel.from_pretrained(load_model(tiny_dir, torch.float32, spec.quantization_config), tmp_path).eval()
    with torch.no_grad():
        a = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        b = reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # 4-bit matmuls round differently once the base is prepared for k-bit training.
    tol = 2e-3 if method == "qlora" else 1e-5
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_qlora_base_is_4bit(tiny_dir):
    import bitsandbytes as bnb

    _, model = _wrapped("qlora", tiny_dir)
    q_proj = model.get_base_model().model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, bnb.nn.Linear4bit)
    assert q_proj.base_layer.weight.quant_type == "nf4"


def test_qlora_on_widths_bitsandbytes_cpu_layout_cannot_take(tmp_path):
    """A model 48 wide (k_proj 24 out, 48 in): bitsandbytes' AVX512-BF16 layout needs widths of
    32 and 64 and failed at the first validation; those layers keep the generic 4-bit kernel."""
    from conftest import FAST

    from ccexp.run import run

    metrics = run(compose_cfg(*FAST, "method=qlora", "backend=cpu", "model.arch.hidden=48", "model.arch.heads=4",
                              "model.arch.kv_heads=2", "eval.generate_examples=2", "eval.baseline=false"), tmp_path)
    assert metrics["status"] == "finished" and metrics["train/steps"] == 4


def test_qlora_checkpoints_activations_and_lora_does_not(tiny_dir):
    """QLoRA's recipe (as in the paper) recomputes activations; LoRA keeps them by default."""
    for method, expected in (("qlora", True), ("lora", False)):
        _, model = _wrapped(method, tiny_dir)
        assert model.get_base_model().is_gradient_checkpointing is expected, method


def test_lora_targets_are_matched_as_peft_matches_them(tiny_dir):
    """A target is a module's full name or its end after a dot (peft's rule); one that names no
    module fails in one line, listing the model's linear layers."""
    from ccexp.config import ConfigError
    from ccexp.methods.base import check_targets

    model = load_model(tiny_dir, torch.float32)
    check_targets(model, ["q_proj", "self_attn.v_proj", "model.layers.0.mlp.up_proj"])
    with pytest.raises(ConfigError) as err:
        check_targets(model, ["q_proj", "c_attn"])
    assert str(err.value) == ("model.lora_targets: ['c_attn'] name no linear layer of this model (its linear layers: "
                              "down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj)")
    # A block or a norm exists but is no layer LoRA takes: peft's traceback came after the model loaded.
    with pytest.raises(ConfigError) as err:
        check_targets(model, ["mlp", "input_layernorm"], "method.target_modules")
    assert str(err.value) == ("method.target_modules: input_layernorm (LlamaRMSNorm), mlp (LlamaMLP) are no linear "
                              "layers; LoRA adapts linear layers (this model's: down_proj, gate_proj, k_proj, lm_head, "
                              "o_proj, q_proj, up_proj, v_proj)")
    check_targets(model, ["q_proj", "embed_tokens"])  # peft's LoRA takes embeddings too


def test_gpt2_style_models_list_their_conv1d_layers_and_refuse_packing_with_attention_dropout():
    from transformers import GPT2Config, GPT2LMHeadModel

    from ccexp.backends.lightning import packing_applies
    from ccexp.config import ConfigError, validate
    from ccexp.methods.base import check_targets

    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=64, n_embd=32, n_layer=1, n_head=2))
    with pytest.raises(ConfigError) as err:
        check_targets(model, ["q_proj"])
    assert str(err.value) == ("model.lora_targets: ['q_proj'] name no linear layer of this model (its linear layers: "
                              "c_attn, c_fc, c_proj, lm_head)")
    with pytest.raises(ConfigError) as err:  # GPT-2 names it attn_pdrop: the check read attention_dropout only
        packing_applies(validate(compose_cfg("model=tiny")), model)
    assert str(err.value) == "backend.packing=true: model tiny has attention dropout 0.1; set backend.packing=false"


def test_a_bf16_base_without_autocast_is_refused():
    from ccexp.backends.lightning import resolve_base_dtype
    from ccexp.config import ConfigError

    assert resolve_base_dtype("bfloat16", "bf16-mixed") == torch.bfloat16
    with pytest.raises(ConfigError, match=r"^backend.base_dtype=bfloat16: a bf16 base needs autocast"):
        resolve_base_dtype("bfloat16", "32-true")


def test_a_prompt_tuned_row_is_scored_as_alone_whatever_its_batch(tiny_dir, tokenizer):
    """peft puts the soft prompt before a row's left padding and drops position ids: the more
    padding a batch gave a row, the further its prompt from its text (SmolLM2's validation loss
    1.60 in batches of 8, 1.42 one at a time). Each row is now [pad][prompt][text]. The tiny
    model's attention is sharpened (q, k x10) so that a distance shows in its numbers."""
    from ccexp.methods.prompt_tuning import soft_prompt_inputs

    torch.manual_seed(0)
    _, model = _wrapped("prompt_tuning", tiny_dir)
    model.eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "q_proj" in name or "k_proj" in name:
                param.mul_(10)
    examples = [{"messages": [{"role": "user", "content": "Rate the call: " + "the agent was polite. " * n},
                              {"role": "assistant", "content": f'{{"csat": {1 + n % 5}}}'}]} for n in (1, 30, 9)]
    items = EncodedDataset(tokenizer, examples, 512).items
    with torch.no_grad():
        alone = [completion_nll(model, collate([item], tokenizer.pad_token_id))[0] for item in items]
        together, _ = completion_nll(model, collate(items, tokenizer.pad_token_id))
        torch.testing.assert_close(together, sum(alone), rtol=0, atol=1e-3)  # 0.1 apart with peft's layout
        # The last prompt token's logits (generation's first step) as peft gives the row alone.
        batch = collate(items, tokenizer.pad_token_id)
        last = model.base_model(**soft_prompt_inputs(model, batch["input_ids"], batch["attention_mask"])).logits[:, -1]
        for row, item in enumerate(items):
            ids = torch.tensor([item.input_ids])
            torch.testing.assert_close(last[row], model(input_ids=ids).logits[0, -1], rtol=1e-4, atol=1e-4)


def test_prompt_tuning_checkpoints_activations_when_asked(tiny_dir, tokenizer):
    """method.gradient_checkpointing is prompt tuning's key too (the config lacked it: "not a key
    of the config"), and the soft prompt's gradient is the one without checkpointing."""
    grads = {}
    for checkpointing in (False, True):
        rc = validate(compose_cfg("model=tiny", "method=prompt_tuning", f"method.gradient_checkpointing={checkpointing}"))
        torch.manual_seed(0)
        model = METHODS["prompt_tuning"](rc.method, rc.model, str(tiny_dir), torch.float32).wrap(
            load_model(tiny_dir, torch.float32))
        assert model.get_base_model().is_gradient_checkpointing is checkpointing
        model.train()
        nll, count = completion_nll(model, _batch(tokenizer))
        (nll / count).backward()
        grads[checkpointing] = next(p.grad for p in model.parameters() if p.requires_grad)
    assert grads[False] is not None and grads[False].abs().sum() > 0
    torch.testing.assert_close(grads[True], grads[False])

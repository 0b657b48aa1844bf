"""backend=mlx on the tiny model: parity with the torch path, each method end to end, the
adapters opened by mlx-lm itself, fuse, the seed_mlx_small experiment, one-line config errors."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx_lm
import pytest
from conftest import FAST, compose_cfg
from mlx.utils import tree_flatten
from mlx_lm.tuner.lora import LoRALinear
from mlx_lm.utils import load_model
from pytorch_lightning.loggers.logger import Logger

from ccexp.backends import build_backend, mlx_prompt
from ccexp.backends import mlx as mlx_backend
from ccexp.config import ConfigError, validate
from ccexp.data import build_splits
from ccexp.data.batching import prompt_ids
from ccexp.models import resolve_model_dir
from ccexp.run import run

# MLX's Linux CPU backend runs on reference BLAS: shorter rows keep each run to seconds.
SHORT = (*FAST, "model.max_seq_len=256")
MLX = (*SHORT, "backend=mlx")
# tiny: hidden 64, q,o: 64->64, k,v: 64->32, 2 layers (as in test_methods).
EXPECTED_TRAINABLE = {"lora": 2 * 16 * ((64 + 64) * 2 + (64 + 32) * 2), "qlora": 2 * 16 * ((64 + 64) * 2 + (64 + 32) * 2),
                      "prompt_tuning": 20 * 64}
ADAPTER_FILES = {"lora": ("adapters.safetensors", "adapter_config.json"),
                 "qlora": ("adapters.safetensors", "adapter_config.json"),
                 "prompt_tuning": (mlx_prompt.WEIGHTS, mlx_prompt.CONFIG)}


@pytest.fixture(scope="module")
def mlx_run(tmp_path_factory):
    """(run dir, metrics, backend) per method and extra overrides, each trained once per module;
    LoRA and QLoRA also fuse."""
    runs = {}

    def get(method: str, *overrides: str):
        key = (method, *overrides)
        if key not in runs:
            run_dir, built = tmp_path_factory.mktemp(f"mlx-{method}"), []
            fuse = ("backend.fuse=true",) if method in ("lora", "qlora") else ()
            with pytest.MonkeyPatch.context() as mp:  # keep the trained backend to compare against
                mp.setattr("ccexp.run.build_backend", lambda *args: built.append(build_backend(*args)) or built[-1])
                metrics = run(compose_cfg(*MLX, f"method={method}", *fuse, *overrides), run_dir)
            runs[key] = run_dir, metrics, built[0]
        return runs[key]

    return get


def _prompts(n: int = 3) -> list[list[dict]]:
    rc = validate(compose_cfg(*MLX))
    return [ex["messages"][:-1] for ex in build_splits(rc.data, rc.data_size, rc.task_mix)["test"][:n]]


def _same_answers(backend, model, tokenizer, max_tokens: int = 8) -> None:
    """backend.generate and mlx_lm.generate on ``model`` agree on every prompt. The random tiny
    model echoes whitespace, so the token counts carry the comparison as much as the texts."""
    prompts, room = _prompts(), backend.cfg.model.max_seq_len - max_tokens
    ours = backend.generate(prompts, max_tokens)
    for messages, text, n in zip(prompts, ours.texts, ours.new_tokens):
        ids = prompt_ids(backend.tokenizer, messages, room)  # cut as training and the backend cut
        theirs = [r.token for r in mlx_lm.stream_generate(model, tokenizer, ids, max_tokens=max_tokens)]
        assert n == len(theirs) and text == tokenizer.decode(theirs, skip_special_tokens=True).strip()


def _logits(model) -> mx.array:
    return model(mx.array([[1, 9690, 198, 4093, 1323, 28, 260, 2642, 436, 9141, 30, 2, 198]]))  # any ids


@pytest.mark.parametrize("method", ["lora", "qlora", "prompt_tuning"])
def test_each_method_end_to_end(method, mlx_run):
    run_dir, metrics, _ = mlx_run(method)
    for name in ("config.yaml", "metrics.json", "predictions.jsonl", *(f"adapter/{f}" for f in ADAPTER_FILES[method])):
        assert (run_dir / name).is_file(), name
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["status"] == "finished" and saved["train/steps"] == 4
    assert [h["step"] for h in saved["train/val_history"]] == [2, 4]
    assert saved["params/trainable"] == EXPECTED_TRAINABLE[method]
    assert saved["val/loss"] < saved["baseline/val/loss"] - 0.01  # a random model: tenths of a nat at most
    predictions = (run_dir / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 12  # 6 answers x (adapter, baseline)
    assert metrics["val/loss"] == saved["val/loss"]
    env = json.loads((run_dir / "environment.json").read_text())  # what precision=auto became on MLX
    assert env["device"] == "mlx" and env["precision"] == "float32" and env["versions"]["mlx-lm"]
    assert saved["train/compiled"] == 1.0  # the step is mx.compile'd: its compiling is in train/seconds


def test_same_experiment_on_torch_and_mlx(mlx_run, tmp_path):
    """Same seed, data and LoRA settings: same examples, batches and loss on both backends."""
    _, mlx, _ = mlx_run("lora")
    cpu = run(compose_cfg(*SHORT, "backend=cpu"), tmp_path)
    assert set(mlx) == set(cpu)
    for metrics in (mlx, cpu):
        assert metrics["val/loss"] < metrics["baseline/val/loss"] - 0.01
        assert metrics["train/val_history"][-1]["val_loss"] < metrics["train/val_history"][0]["val_loss"]
    for key in ("train/steps", "train/epochs", "train/tokens", "train/truncated_examples", "val/answer_tokens",
                "test/answer_tokens", "params/trainable", "params/total"):
        assert mlx[key] == cpu[key], key
    # The untouched base scores the same answer tokens alike (torch may run bf16 autocast).
    assert mlx["baseline/val/loss"] == pytest.approx(cpu["baseline/val/loss"], rel=1e-3)
    assert mlx["baseline/test/loss"] == pytest.approx(cpu["baseline/test/loss"], rel=1e-3)


class _Recorder(Logger):
    """A logger that keeps what the backend logs per step."""

    def __init__(self):
        super().__init__()
        self.logged: list[tuple[int, dict]] = []

    name, version = "recorder", 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.logged.append((step, dict(metrics)))


def test_same_seed_same_mlx_run(mlx_run, tmp_path):
    """The same run again; and it logs per step the keys the Lightning backend logs, so a sweep
    across backends draws one set of curves."""
    _, metrics, _ = mlx_run("lora")
    rc = validate(compose_cfg(*MLX))
    splits = build_splits(rc.data, rc.data_size, rc.task_mix)
    logger = _Recorder()
    again = build_backend("mlx", rc, resolve_model_dir(rc.model)).fit(splits["train"], splits["val"], logger, tmp_path)
    assert again["train/val_history"] == metrics["train/val_history"]
    torch_logger = _Recorder()
    rc = validate(compose_cfg(*SHORT, "backend=cpu"))
    build_backend("cpu", rc, resolve_model_dir(rc.model)).fit(splits["train"], splits["val"], torch_logger,
                                                              tmp_path / "cpu")
    keys = lambda records: {(step, tuple(sorted(m))) for step, m in records}  # noqa: E731
    assert keys(logger.logged) == keys(torch_logger.logged) and logger.logged


def test_lora_adapter_opens_with_mlx_lm(mlx_run, tiny_dir):
    run_dir, _, backend = mlx_run("lora")
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert (config["lora_parameters"]["rank"], config["lora_parameters"]["scale"]) == (16, 2.0)
    model, tokenizer = mlx_lm.load(str(tiny_dir), adapter_path=str(run_dir / "adapter"))
    base, _ = mlx_lm.load(str(tiny_dir))
    assert mx.allclose(_logits(model), _logits(backend.net), atol=1e-6).item()
    assert not mx.allclose(_logits(model), _logits(base), atol=1e-4).item()  # the adapter does something
    _same_answers(backend, model, tokenizer)


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_fused_model_matches_the_adapter(mlx_run, tiny_dir, method):
    """QLoRA's adapted layers merge de-quantized (4-bit again would undo the adapter); the
    layers it did not adapt stay 4-bit, as trained."""
    run_dir, _, backend = mlx_run(method)
    fused, _ = mlx_lm.load(str(run_dir / "fused"))
    assert not any("lora" in name for name, _ in fused.named_modules())
    assert mx.allclose(_logits(fused), _logits(backend.net), atol=1e-4).item()
    layer = fused.model.layers[0]
    assert type(layer.self_attn.q_proj) is nn.Linear
    assert type(layer.mlp.up_proj) is (nn.QuantizedLinear if method == "qlora" else nn.Linear)


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_mlx_lora_load_gives_the_model_evaluated(mlx_run, tiny_dir, method):
    """ccexp's loader puts a QLoRA adapter on its 4-bit base, as trained: the logits ccexp scored.
    mlx_lm.load would put it on the full-precision base, another model."""
    from ccexp.backends import mlx_lora

    run_dir, _, backend = mlx_run(method)
    model, _ = mlx_lora.load(tiny_dir, run_dir / "adapter")
    assert mx.allclose(_logits(model), _logits(backend.net), atol=1e-6).item()
    if method == "qlora":
        plain, _ = mlx_lm.load(str(tiny_dir), adapter_path=str(run_dir / "adapter"))
        assert not mx.allclose(_logits(plain), _logits(backend.net), atol=1e-6).item()


@pytest.mark.parametrize("method", ["lora", "qlora", "prompt_tuning"])
def test_the_loaders_and_the_fused_model_keep_the_precision_trained_in(mlx_run, tiny_dir, method):
    """backend.precision=bf16-mixed trains and scores on a bf16 base: the adapter's loader and the
    fused model give that model, not the fp32 checkpoint's (logits 3e-3 apart on the tiny model)."""
    from ccexp.backends import mlx_lora

    run_dir, _, backend = mlx_run(method, "backend.precision=bf16-mixed")
    if method == "prompt_tuning":
        loaded = mlx_prompt.load(load_model(tiny_dir)[0], run_dir / "adapter")
    else:
        loaded = mlx_lora.load(tiny_dir, run_dir / "adapter")[0]
        fused, _ = mlx_lm.load(str(run_dir / "fused"))
        assert fused.model.layers[0].self_attn.q_proj.weight.dtype == mx.bfloat16  # saved as trained
        assert json.loads((run_dir / "fused" / "config.json").read_text())["torch_dtype"] == "bfloat16"
        # W + ΔW rounded to bf16: ~1e-2 off on logits of ~1 (the fp32 merge of the fp32 base was 2e-2 off on qlora)
        assert mx.allclose(_logits(fused), _logits(backend.net), atol=2e-2).item()
    assert mx.array_equal(_logits(loaded), _logits(backend.net)).item()


def test_prompt_tuning_adapter_reloads(mlx_run, tiny_dir):
    run_dir, _, backend = mlx_run("prompt_tuning")
    net = mlx_prompt.load(load_model(tiny_dir)[0], run_dir / "adapter")
    assert net.n_prefix == 20
    assert mx.allclose(_logits(net), _logits(backend.net), atol=1e-6).item()
    _, tokenizer = mlx_lm.load(str(tiny_dir))
    _same_answers(backend, net, tokenizer)  # the reloaded soft prompt runs in mlx_lm.generate too


def test_seed_mlx_small_under_fast_overrides(tmp_path, tiny_dir):
    """The experiment's own values, cut to a few steps; a vanishing learning rate never improves
    validation, so early stopping ends it and the first adapter is the one kept."""
    rc = validate(compose_cfg("experiment=seed_mlx_small"))
    assert (rc.backend.name, rc.data_size.name, rc.trainer.max_steps, rc.trainer.batch_size, rc.method.lr,
            rc.trainer.val_every_n_steps, rc.trainer.save_every_n_steps) == ("mlx", "small", 1500, 4, 1e-5, 100, 300)
    assert rc.trainer.early_stopping_patience > 0 and rc.experiment_name == "seed_mlx_small"
    metrics = run(compose_cfg(*SHORT, "experiment=seed_mlx_small", "trainer.max_steps=50", "trainer.batch_size=2",
                              "trainer.val_every_n_steps=1", "trainer.save_every_n_steps=2",
                              "trainer.early_stopping_patience=2", "method.lr=1e-12", "eval.generate_examples=0",
                              "eval.baseline=false"), tmp_path)
    assert metrics["train/early_stopped"] == 1.0 and metrics["train/steps"] == 3 and metrics["train/best_step"] == 1
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000002"]
    mlx_lm.load(str(tiny_dir), adapter_path=str(tmp_path / "checkpoints" / "step_0000002"))  # each checkpoint opens


@pytest.mark.parametrize("overrides,key", [
    (("method=prompt_tuning", "backend.fuse=true"), "backend.fuse"),
    (("backend=cpu", "+backend.fuse=true"), "backend.fuse"),
    (("method.target_modules=[q_proj,qq_proj]",), "method.target_modules"),
    (("method=qlora", "method.quant_type=fp4"), "method.quant_type"),  # bitsandbytes' options
    (("method=qlora", "method.double_quant=false"), "method.double_quant"),
    (("trainer.resume_from=auto",), "trainer.resume_from"),
    (("+backend.base_dtype=bfloat16",), "backend.base_dtype"),  # torch's: MLX's base follows backend.precision
])
def test_mlx_config_errors_name_the_key(overrides, key, tmp_path):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        run(compose_cfg(*MLX, *overrides), tmp_path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "metrics.json").exists()  # refused before training


def test_lora_targets_match_as_on_torch(tiny_dir):
    """A target names a layer by its last name or by its path in the block, as peft matches
    them on the torch backends; a name of none lists the block's linear layers."""
    from mlx_lm.utils import load_model as mlx_load_model

    from ccexp.backends.mlx_lora import lora_keys

    model = mlx_load_model(tiny_dir)[0]
    assert lora_keys(model, ["q_proj", "mlp.up_proj"], "method.target_modules", "tiny") == \
        ["mlp.up_proj", "self_attn.q_proj"]
    with pytest.raises(ConfigError, match=r"^method\.target_modules: \['qq_proj'\] name no linear layer of "
                                          r"model=tiny \(its linear layers: down_proj, gate_proj, k_proj, o_proj, "
                                          r"q_proj, up_proj, v_proj\)$"):
        lora_keys(model, ["q_proj", "qq_proj"], "method.target_modules", "tiny")


def test_backend_mlx_without_mlx_is_one_line(monkeypatch):
    from ccexp.backends import resolve_backend

    monkeypatch.setitem(sys.modules, "mlx_lm", None)  # import mlx_lm -> ImportError
    with pytest.raises(ConfigError, match=r"^backend=mlx: cannot import") as err:
        resolve_backend("mlx")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("method", ["lora", "prompt_tuning"])
def test_saved_mlx_adapter_evaluates_again(method, mlx_run, tmp_path, capsys):
    from ccexp.evaluate.__main__ import main as evaluate_main

    run_dir, metrics, _ = mlx_run(method)
    assert evaluate_main([f"adapter={run_dir}", f"out={tmp_path}", "eval.generate_examples=2",
                          "eval.latency_examples=0", "eval.baseline=false"]) == 0
    again = json.loads((tmp_path / "metrics.json").read_text())
    assert again["val/loss"] == pytest.approx(metrics["val/loss"], rel=1e-4)  # the trained adapter, not a fresh one
    # Another setting would score another model (alpha rescales the update): one line, as on torch.
    changed, field = ("method.alpha=64", "lora_parameters.scale") if method == "lora" else \
        ("method.num_virtual_tokens=3", "num_virtual_tokens")
    assert evaluate_main([f"adapter={run_dir}", f"out={tmp_path / 'x'}", changed, "eval.generate_examples=0",
                          "eval.baseline=false"]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and f"the adapter has {field}=" in line, line


def test_the_trainer_keys_reach_mlx_training(tmp_path, monkeypatch):
    """trainer.weight_decay, warmup_ratio, max_grad_norm and group_by are what MLX training uses
    (as test_run checks on torch): a dropped one would train on mlx's defaults without a word."""
    import mlx.optimizers as optim

    seen: dict = {}

    def recording(name, real):
        def call(*args, **kwargs):
            seen.setdefault(name, (args, kwargs))
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(mlx_backend, "warmup_linear_decay", recording("schedule", mlx_backend.warmup_linear_decay))
    monkeypatch.setattr(optim, "AdamW", recording("adamw", optim.AdamW))
    monkeypatch.setattr(optim, "clip_grad_norm", recording("clip", optim.clip_grad_norm))
    monkeypatch.setattr(mlx_backend.EncodedDataset, "sort_keys",
                        recording("group_by", mlx_backend.EncodedDataset.sort_keys))
    run(compose_cfg(*MLX, "trainer.max_steps=2", "trainer.weight_decay=0.07", "trainer.warmup_ratio=0.5",
                    "trainer.max_grad_norm=0.3", "trainer.group_by=prompt", "method.lr=1e-3",
                    "eval.generate_examples=0", "eval.baseline=false", "eval.latency_examples=0"), tmp_path)
    assert seen["schedule"][0] == (1e-3, 1, 2)  # half of 2 steps warming up
    assert seen["adamw"][1]["weight_decay"] == 0.07
    assert seen["clip"][0][1] == 0.3
    assert seen["group_by"][0][1] == "prompt"


def test_the_final_validation_counts_no_patience():
    """After the last step, validation judges it for the best adapter; it is no early stop."""
    from ccexp.backends.mlx import BestAdapter

    class Saved:
        def save(self, path):
            pass

    class Net:
        def trainable_parameters(self):
            return {}

    best = BestAdapter(Net(), Saved(), Path("unused"), patience=1)
    assert not best.record(2, 1.0) and not best.record(3, 1.5, final=True) and not best.stopped
    assert best.record(4, 1.6) and best.stopped


def test_gradient_checkpointing_recomputes_with_the_same_masks(monkeypatch):
    """method.gradient_checkpointing (QLoRA's default) on MLX: each block's activations are
    recomputed in the backward pass with the forward's LoRA dropout masks, so the gradients are
    those of keeping the activations (mlx-lm's own recomputation draws new masks), the peak
    memory is lower, and the blocks get their own classes back after training."""
    rc = validate(compose_cfg(*MLX, "method.dropout=0.5"))
    net = build_backend("mlx", rc, resolve_model_dir(rc.model)).net
    for _, module in net.named_modules():  # B starts at zero, which would hide the masks from the loss
        if isinstance(module, LoRALinear):
            module.lora_b = 0.1 * mx.random.normal(module.lora_b.shape)
    net.train()
    tokens = mx.random.randint(0, 1000, (2, 256))
    loss_and_grad = nn.value_and_grad(net, lambda n, t: nn.losses.cross_entropy(n(t[:, :-1]), t[:, 1:]).mean())

    def step() -> tuple[float, list, int]:
        mx.random.seed(0)
        mx.reset_peak_memory()
        loss, grads = loss_and_grad(net, tokens)
        mx.eval(loss, grads)
        return loss.item(), tree_flatten(grads), mx.get_peak_memory()

    classes = [type(m) for m in net.layers]
    plain_loss, plain, _ = step()
    with mlx_backend.checkpointed(net.layers):
        assert all(type(m) is not cls for m, cls in zip(net.layers, classes))
        loss, recomputed, recomputed_peak = step()
        with monkeypatch.context() as mp:
            mp.setattr(mx, "checkpoint", lambda fn: fn)  # the same keyed masks, activations kept
            kept_loss, kept, kept_peak = step()
    assert [type(m) for m in net.layers] == classes
    assert loss == kept_loss and recomputed_peak < kept_peak
    for (name, a), (_, b) in zip(recomputed, kept):
        assert mx.array_equal(a, b).item(), name
    assert plain_loss != loss  # the masks mattered: the global stream's draws differ from the keyed ones


def test_a_damaged_mlx_adapter_file_is_one_line(tmp_path):
    """mx.load's own error on a file cut short is a RuntimeError with a traceback."""
    file = tmp_path / "adapters.safetensors"
    mx.save_safetensors(str(file), {"w": mx.zeros((4, 4))})
    file.write_bytes(file.read_bytes()[:20])
    with pytest.raises(ConfigError, match=rf"^{file}: not a readable safetensors file \(") as err:
        mlx_prompt.load_weights_checked(file, {"w": mx.zeros((4, 4))})
    assert "\n" not in str(err.value)


def test_a_run_of_hours_on_mlx_cpu_is_said(tiny_dir, caplog, monkeypatch):
    """mlx[cpu] on Linux runs at reference BLAS's speed: experiment=seed_mlx_small there is days of
    SmolLM2, which started without a word. Hours of training get one warning line; a few steps none."""
    import logging

    model, _ = load_model(tiny_dir)
    monkeypatch.setattr(mlx_backend, "available_cores", lambda: 2)
    monkeypatch.setattr(mlx_backend.mx, "default_device", lambda: mx.Device(mx.cpu))  # a Mac's is its GPU
    with caplog.at_level(logging.WARNING, logger="ccexp"):
        mlx_backend._warn_if_days_on_a_cpu(model, 4 * 6, [700] * 10)
        assert not caplog.records
        mlx_backend._warn_if_days_on_a_cpu(model, 1500 * 4, [700] * 10)
    [record] = caplog.records
    assert record.getMessage().startswith("backend=mlx runs on the CPU here (mlx[cpu]: reference BLAS, ~")
    assert "6,000 examples of training take ~" in record.getMessage() and "use backend=cpu (torch)" in record.getMessage()


def _readme_mlx_snippet(method: str, base: Path, run_dir: Path) -> str:
    """README's MLX Python block as a user of ``method`` runs it: the lines whose comment names
    other methods only (``# lora, qlora: ...``) left out, the model and run paths filled in."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("## MLX backend", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    kept = []
    for line in block.splitlines():
        named = set(re.findall(r"\w+", line.partition("  # ")[2].partition(":")[0])) & {"lora", "qlora", "prompt_tuning"}
        if not named or method in named:
            kept.append(line)
    return ("\n".join(kept).replace("~/.cache/ccexp/smollm2-135m-instruct-0.1.2", str(base))
            .replace("outputs/<date>/<time>", str(run_dir)))


@pytest.mark.parametrize("method", ["lora", "qlora", "prompt_tuning"])
def test_the_readme_python_snippet_runs_as_written(method, mlx_run, tiny_dir, capsys):
    run_dir, _, backend = mlx_run(method)
    names: dict = {}
    exec(compile(_readme_mlx_snippet(method, tiny_dir, run_dir), "README.md", "exec"), names)  # noqa: S102
    assert capsys.readouterr().out  # the answer is printed
    assert mx.allclose(_logits(names["model"]), _logits(backend.net), atol=1e-6).item()  # by the model scored


def test_losses_take_the_logits_the_model_gives(tiny_dir):
    """The loss reads the logits as PromptedLM.head(hidden), not from the model's call: a model whose
    call caps its logits after the head (mlx-lm's gemma4_text, gear) was scored without the cap; any
    other change after the head is refused in one line rather than scored on logits it never gives."""
    from mlx_lm.models import gear, llama

    args = gear.ModelArgs(model_type="gear", vocab_size=100, hidden_size=64, intermediate_size=128,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                          rms_norm_eps=1e-6, layer_types=None, final_logit_softcapping=3.0)
    capped = gear.Model(args)
    mlx_prompt.check_supported(capped, "gear")
    net, tokens = mlx_prompt.PromptedLM(capped), mx.array([[1, 2, 3, 4]])
    assert mx.allclose(net.head(net.hidden(tokens)), capped(tokens), atol=1e-5).item()
    assert mx.abs(net.head(net.hidden(tokens))).max().item() <= 3.0

    class Scaled(llama.Model):  # a logit scale applied in the call, after the head
        def __call__(self, *args, **kwargs):
            return 2 * super().__call__(*args, **kwargs)

    model = load_model(tiny_dir)[0]
    scaled = Scaled(model.args)
    scaled.update(model.parameters())
    with pytest.raises(ConfigError, match=r"^model=odd: backend=mlx computes losses from the output head") as err:
        mlx_prompt.check_supported(scaled, "odd")
    assert "\n" not in str(err.value)

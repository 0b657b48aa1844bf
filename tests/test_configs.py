"""Every option of every config group composes and validates; bad input fails in one line."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import FAST, compose_cfg

from ccexp.__main__ import CONFIG_DIR
from ccexp.config import ConfigError, validate

GROUPS = ["model", "method", "backend", "task_mix", "data_size", "data", "trainer", "eval", "logger", "compare"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((Path(CONFIG_DIR) / g).glob("*.yaml"))]
# Experiments are global overlays, composed here; each also runs under fast settings in its
# backend's tests (seed_mlx_small: tests/test_mlx.py).
EXPERIMENTS = [p.stem for p in sorted((Path(CONFIG_DIR) / "experiment").glob("*.yaml"))]


def test_every_group_has_options():
    assert {g for g, _ in OPTIONS} == set(GROUPS)
    assert {o for g, o in OPTIONS if g == "method"} == {"lora", "qlora", "prompt_tuning"}
    assert {o for g, o in OPTIONS if g == "backend"} == {"auto", "cpu", "cuda", "mlx"}
    assert {o for g, o in OPTIONS if g == "model"} >= {"smollm2_135m", "tiny", "mistral_7b", "llama3_8b", "qwen2_5_7b"}
    assert "seed_mlx_small" in EXPERIMENTS


def test_every_config_folder_is_one_a_test_covers():
    """Every config is tested: the groups above, experiment/ and hparams_search/ (each composed and
    run or checked in tests/test_sweeps.py) and hydra/launcher/ (slurm, tests/test_sweeps.py) are
    all of conf/'s folders, so a group added without a test fails here instead of going unseen."""
    folders = {p.parent.relative_to(CONFIG_DIR).as_posix() for p in Path(CONFIG_DIR).rglob("*.yaml")} - {"."}
    assert folders == set(GROUPS) | {"experiment", "hparams_search", "hydra/launcher"}
    assert [p.stem for p in (Path(CONFIG_DIR) / "hydra" / "launcher").glob("*.yaml")] == ["slurm"]


# Options with a field the user must give (model=local: the directory).
REQUIRED = {("model", "local"): ("model.path=/models/mine",)}


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_validates(group, option):
    rc = validate(compose_cfg(f"{group}={option}", *REQUIRED.get((group, option), ())))
    # Groups without a name field: a value their option sets, so the option is the one composed.
    unnamed = {("trainer", "default"): ("max_steps", -1), ("trainer", "fast"): ("max_steps", 4),
               ("eval", "default"): ("generate_examples", 18), ("compare", "default"): ("metric", "test/acc")}
    if (group, option) in unnamed:
        field_name, value = unnamed[(group, option)]
        assert getattr(getattr(rc, group), field_name) == value
    else:
        assert getattr(rc, group).name == option
    if (group, option) in REQUIRED:
        with pytest.raises(ConfigError, match=r"^model\.path: expected a directory with the model, or a \.gguf file, for source=local, got None"):
            validate(compose_cfg(f"{group}={option}"))


@pytest.mark.parametrize("option", ["auto", "cpu", "cuda"])
def test_torch_backends_list_every_torch_field(option):
    """A field missing from an option's config cannot be overridden without "+" (backend.packing=false
    with the default backend=auto was refused): each torch backend has every field but MLX's, its
    own or from the option its defaults list extends."""
    import dataclasses

    from ccexp.config import BackendConfig

    listed = set(compose_cfg(f"backend={option}").backend)
    assert listed == {f.name for f in dataclasses.fields(BackendConfig)} - {"fuse"}


def test_each_torch_backend_field_is_written_once():
    """Copied into auto, cpu and cuda, the fields' comments drifted apart (packed_weights: "cpu,
    bf16 base" in two, "cpu (x86), bf16 or fp32 base" in the third, which is what packed.py does):
    cpu and cuda extend auto, as method/qlora extends lora, and set only their name."""
    import yaml

    for option in ("cpu", "cuda"):
        own = yaml.safe_load((Path(CONFIG_DIR) / "backend" / f"{option}.yaml").read_text())
        assert own == {"defaults": ["auto", "_self_"], "name": option}
    auto = (Path(CONFIG_DIR) / "backend" / "auto.yaml").read_text()
    assert "packed_weights: true  # cpu (x86), bf16 or fp32 base:" in auto


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_validates(experiment):
    rc = validate(compose_cfg(f"experiment={experiment}"))
    assert rc.experiment_name == experiment  # its W&B group


def test_defaults():
    rc = validate(compose_cfg())
    assert (rc.objective.metric, rc.objective.direction) == ("val/loss", "minimize")
    assert (rc.compare.metric, rc.compare.direction) == ("test/acc", "maximize")
    assert rc.compare.constraints == ["test/latency/p50_s <= 1.0", "adapter/size_mb <= 100"]
    assert rc.backend.num_threads is None  # outside a parallel launcher: all cores
    assert (rc.model.name, rc.method.name, rc.backend.name, rc.data_size.name) == ("smollm2_135m", "lora", "auto", "tiny")
    assert (rc.method.r, rc.method.alpha, rc.method.dropout) == (16, 32, 0.05)
    assert rc.model.lora_targets == ["q_proj", "k_proj", "v_proj", "o_proj"]


# Set from the environment or the machine by the YAML (${threads_per_job:}, ${oc.env:WANDB_PROJECT,...}).
MACHINE_FIELDS = {("backend", "num_threads"), ("logger", "project")}


def test_schema_defaults_are_the_default_options_values(monkeypatch):
    """A field a config lacks takes its schema default (an older run's config.yaml, a config
    built in Python): the default option's value, so it trains and scores as the YAML does.
    Mappings and lists keep an empty default: merged under an option's own (task_mix.weights),
    or back after ~eval.max_new_tokens_by_task, the schema's entries would come back."""
    from dataclasses import MISSING, fields

    from omegaconf import OmegaConf

    from ccexp.config import _SCHEMAS

    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    default = OmegaConf.to_container(compose_cfg(), resolve=True)
    drift = [f"{group}.{f.name}: schema {f.default!r}, YAML {default[group][f.name]!r}"
             for group, schema in _SCHEMAS.items() for f in fields(schema)
             if f.default is not MISSING and f.name in default[group] and (group, f.name) not in MACHINE_FIELDS
             and f.default != default[group][f.name]]
    assert drift == []


def test_qlora_is_lora_with_a_4bit_base():
    rc = validate(compose_cfg("method=qlora"))
    assert (rc.method.name, rc.method.r, rc.method.quant_type, rc.method.double_quant) == ("qlora", 16, "nf4", True)


@pytest.mark.parametrize("override,key", [
    ("method.r=-1", "method.r"),
    ("method.dropout=1.5", "method.dropout"),
    ("trainer.batch_size=0", "trainer.batch_size"),
    ("data_size.train=0", "data_size.train"),
    ("eval.csat_band=-1", "eval.csat_band"),
    ("+task_mix.weights.bogus=1", "task_mix.weights.bogus"),
    ("trainer.limit_val_batches=0", "trainer.limit_val_batches"),
    ("+eval.max_new_tokens_by_task.replyy=5", "eval.max_new_tokens_by_task.replyy"),
    ("trainer.save_every_n_steps=0", "trainer.save_every_n_steps"),
    ("objective.direction=down", "objective.direction"),
    ("compare.direction=best", "compare.direction"),
    # A direction against its key would rank the worst run first, or have Optuna search for it.
    ("compare.metric=val/loss", "compare.direction: maximize, but lower val/loss is better; expected "
                                "compare.direction=minimize"),
    ("objective.metric=val/acc", "objective.direction: minimize, but higher val/acc is better; expected "
                                 "objective.direction=maximize"),
    ("compare.constraints=[latency is low]", "compare.constraints[0]"),
    # numpy's seeding takes 0 .. 2**32 - 1 (Lightning's traceback otherwise); 1.5 would run as seed 1
    ("seed=-1", "seed: expected an integer in [0, 2**32), got -1"),
    ("seed=1.5", "seed: expected an integer in [0, 2**32), got 1.5"),
    ("+model.arch.layers=1.5", "model.arch.layers: expected an integer >= 1, got 1.5"),
    ("+model.arch.heads=5", "model.arch.heads: expected a divisor of model.arch.hidden=64, got 5"),
    ("+model.arch.kv_heads=3", "model.arch.kv_heads: expected a divisor of model.arch.heads=4, got 3"),
    ("method.target_modules=[]", "method.target_modules: expected null (model.lora_targets) or a non-empty list"),
    ("trainer.weight_decay=inf", "trainer.weight_decay: expected a float >= 0, got inf"),
    ("eval.quality_band=inf", "eval.quality_band: expected a finite number >= 0, got inf"),
    # an infinite weight made allocate's shares NaN (a traceback before any training)
    ("task_mix.weights.quality=inf", "task_mix.weights.quality: expected a finite weight > 0, got inf"),
    # the generator reads no file: a test file given with data=synthetic would be silently ignored
    ("+data.test_path=real_test.csv", "data.test_path: expected null for data=synthetic"),
    # wandb.init refuses these after the model has loaded, mid-training, in a traceback
    ("logger.project=team/ccexp", "logger.project: expected a W&B project name"),
    ("logger.project=", "logger.project: expected a W&B project name"),
    # labels of run names, W&B tags and groups, and the report's scenarios: '' or null named nothing
    ("model.name=", "model.name: expected a short name for run names and reports, got ''"),
    ("task_mix.name=' '", "task_mix.name: expected a short name for run names and reports, got ' '"),
    ("data_size.name=", "data_size.name: expected a short name for run names and reports, got ''"),
    ("experiment_name=", "experiment_name: expected a name for the W&B group, got ''"),
    ("experiment_name=null", "experiment_name: expected a name for the W&B group, got None"),
    ("experiment_name=[a]", "experiment_name: expected a name for the W&B group, got ['a']"),
    # OmegaConf takes any integer for true: method.gradient_checkpointing=2 ran as true
    ("method.gradient_checkpointing=2", "method.gradient_checkpointing: expected true or false, got 2"),
    ("logger.adapter_artifact=-1", "logger.adapter_artifact: expected true or false, got -1"),
])
def test_bad_value_names_the_key(override, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        validate(compose_cfg(override))


def test_wandb_project_comes_from_the_environment(monkeypatch):
    """W&B's own variable names the project when the config does not; an explicit
    logger.project still wins, and a bad value says it came from the variable."""
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    assert validate(compose_cfg()).logger.project == "ccexp"
    monkeypatch.setenv("WANDB_PROJECT", "team-calls")
    assert validate(compose_cfg()).logger.project == "team-calls"
    assert validate(compose_cfg("logger.project=mine")).logger.project == "mine"
    monkeypatch.setenv("WANDB_PROJECT", "team/calls")
    with pytest.raises(ConfigError, match=re.escape("logger.project (from WANDB_PROJECT): expected a W&B project name")):
        validate(compose_cfg())


@pytest.mark.parametrize("value", ["OFFLINE", "of", ""])
def test_a_wandb_mode_wandb_refuses_is_one_line_before_the_model_loads(monkeypatch, value, tmp_path):
    """wandb reads WANDB_MODE whatever mode ccexp passes it, and refused these with a pydantic
    traceback once the model had loaded (ccexp had read OFFLINE as offline). Commands that make
    no W&B run (describe, bench) are not refused on it."""
    from ccexp.run import run

    monkeypatch.setenv("WANDB_MODE", value)
    monkeypatch.setattr("ccexp.run.resolve_model_dir", lambda *a: pytest.fail("the model was loaded"))
    with pytest.raises(ConfigError, match=re.escape(f"WANDB_MODE: expected one of wandb's modes (online, offline, "
                                                    f"disabled, dryrun, run, shared: lowercase), got {value!r}")):
        run(compose_cfg(*FAST, "logger=wandb"), tmp_path)
    assert validate(compose_cfg()).logger.name == "wandb"  # what describe and the bench validate


def test_an_empty_init_text_is_refused():
    """'' started the soft prompt at random, as null does, while the config said text."""
    with pytest.raises(ConfigError, match=re.escape("method.init_text: expected text to start the soft prompt from, "
                                                    "or null for a random start")):
        validate(compose_cfg("method=prompt_tuning", "method.init_text=''"))


@pytest.mark.parametrize("override,error", [
    ("trainer.batch_size=abc", "trainer.batch_size: expected an integer, got abc"),
    ("method.alpha=16.0", "method.alpha: expected an integer, got 16.0"),
    ("method.lr=fast", "method.lr: expected a number, got fast"),
    ("method.shared_dropout=maybe", "method.shared_dropout: expected true or false, got maybe"),
    # null, a list or a mapping where the field takes another kind: OmegaConf's words named no type
    # ("field 'lora_targets' is not Optional") or Python's ("Cannot assign str to Dict[str, float]").
    ("method.lr=null", "method.lr: expected a number, got null"),
    ("trainer.group_by=null", "trainer.group_by: expected a string, got null"),
    ("model.lora_targets=null", "model.lora_targets: expected a list, got null"),
    ("task_mix.weights.quality=null", "task_mix.weights.quality: expected a number, got null"),
    ("compare.headline=null", "compare.headline: expected a list, got null"),
    ("model.cache_dir=[a,b]", "model.cache_dir: expected a string, got ['a', 'b']"),
    ("task_mix.weights=abc", "task_mix.weights: expected a mapping, got 'abc'"),
])
def test_wrong_type_names_the_key(override, error):
    """In what was expected and what was given, not OmegaConf's "Value '16.0' of type 'float'
    could not be converted to Integer"."""
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(override))
    assert str(err.value) == error


def _cli(*args: str) -> subprocess.CompletedProcess:
    # Hydra makes the run dir before ccexp refuses the config: a temporary one, never the repo's outputs/.
    with tempfile.TemporaryDirectory() as run_dir:
        return subprocess.run([sys.executable, "-m", "ccexp", *args, f"hydra.run.dir={run_dir}"],
                              capture_output=True, text=True, timeout=300)


def test_cli_range_error_is_one_line():
    proc = _cli("method.r=-1")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "ccexp: error: method.r: expected an integer >= 1, got -1"


@pytest.mark.parametrize("flags", [["-m", "experiment=method_comparison", "--cfg", "job"], ["--cfg", "job", "--info"]])
def test_cli_two_modes_at_once_is_one_line(flags):
    """Hydra raises its own flag check as a ValueError with a traceback (exit 1)."""
    proc = subprocess.run([sys.executable, "-m", "ccexp", *flags], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr == ("ccexp: error: one of -m (--multirun), --cfg and --info at a time, as Hydra takes them; "
                           "a sweep's config: --cfg job without -m shows its first job's, --cfg hydra its "
                           "hydra.sweeper.params\n")


@pytest.mark.parametrize("flag,key", [([], "hydra.run.dir"), (["-m"], "hydra.sweep.dir")])
def test_cli_run_or_sweep_dir_on_a_file_is_one_line(tmp_path, flag, key):
    """A run or sweep dir that is a file, or under one, was Hydra's mkdir traceback (exit 1)."""
    (tmp_path / "afile").write_text("")
    for where, why in (("afile", "a file, not a folder"), ("afile/x", "Not a directory")):
        proc = subprocess.run([sys.executable, "-m", "ccexp", *flag, "model=tiny", f"{key}={tmp_path / where}"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr == (f"ccexp: error: {tmp_path / where}: cannot make the {key.split('.')[1]} dir there "
                               f"({why}); expected {key} to name a folder you can write to\n")


def test_cli_help_says_what_ccexp_is_and_its_companions():
    """--help opens with ccexp, not Hydra's "__main__ is powered by Hydra.", keeps Hydra's group and
    config listing, and names what a first-time user needs next: -m for searches, the other CLIs."""
    proc = subprocess.run([sys.executable, "-m", "ccexp", "--help"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0
    assert proc.stdout.startswith("ccexp: ") and "powered by Hydra" not in proc.stdout
    assert "== Configuration groups ==" in proc.stdout and "method: lora, prompt_tuning, qlora" in proc.stdout
    assert "== Config ==" in proc.stdout and "seed: 42" in proc.stdout
    assert "python -m ccexp -m hparams_search=lora_optuna" in proc.stdout
    for cli in ("ccexp.evaluate", "ccexp.compare", "ccexp.data", "ccexp.bench", "ccexp.bench.show"):
        assert f"python -m {cli} " in proc.stdout, cli
    assert "README.md" in proc.stdout


def test_cli_unknown_option_lists_choices():
    proc = _cli("method=foo")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "ccexp: error: method=foo: no such option, expected one of lora, prompt_tuning, qlora"


def test_cli_mistyped_key_is_one_line_with_the_nearest_keys():
    """Hydra's own override error is five lines and a HYDRA_FULL_ERROR hint; ccexp's is one."""
    proc = _cli("trainer.max_step=4")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("ccexp: error: trainer.max_step: not a key of the config (did you mean "
                                   "trainer.max_steps or trainer.max_epochs or trainer.batch_size?)")


@pytest.mark.parametrize("override,line", [
    # "+" is offered only for a new key of a free-form field: not for a schema field the option
    # leaves out (the option does not use it), nor a key no schema has (validate would refuse it).
    ("data.test_path=x.csv", "data.test_path: not a key of the config (python -m ccexp --cfg job lists the keys); "
                             "data=chatml, data=csv, data=hf, data=jsonl and data=twcs have it"),
    ("task_mix.weights.reply=1", "task_mix.weights.reply: not a key of the config (did you mean "
                                 "task_mix.weights.journey or task_mix.weights.quality or task_mix.weights.issue?); "
                                 "+task_mix.weights.reply=1 adds it"),
    ("lr=0.001", "lr: not a key of the config (python -m ccexp --cfg job lists the keys)"),
    # model.arch takes RANDOM_ARCH's keys only: "+model.arch.foo" would be refused next.
    ("model.arch.foo=1", "model.arch.foo: not a key of the config (did you mean model.arch.family or model.arch.heads "
                         "or model.arch.layers?)"),
    # A field another option of the group sets: which one.
    ("method.num_virtual_tokens=32", "method.num_virtual_tokens: not a key of the config (python -m ccexp --cfg job "
                                     "lists the keys); method=prompt_tuning has it"),
])
def test_a_new_key_is_suggested_only_where_an_option_reads_it(override, line):
    from hydra.errors import HydraException

    from ccexp.config_errors import config_error_line

    with pytest.raises(HydraException) as err:
        compose_cfg(*(["model=tiny"] if override.startswith("model.arch") else []), override)
    assert config_error_line(err.value) == line


def test_a_key_added_that_no_schema_has_gets_the_close_ones():
    """+data.train_pth=… passes Hydra (a new key) and is refused by the schema, with the keys meant."""
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg("+data.train_pth=x.csv"))
    assert str(err.value) == ("data.train_pth: not a key of the config (did you mean data.train_path or "
                              "data.val_path or data.test_path?)")


@pytest.mark.parametrize("key", ["method.target_modules", "model.lora_targets"])
def test_a_list_field_given_one_name_says_a_list_is_expected(key):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(f"{key}=q_proj"))
    assert str(err.value) == f"{key}: expected a list, e.g. [q_proj], got 'q_proj'"


def test_cli_unparsable_override_is_one_line():
    proc = _cli("seed=[1")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("ccexp: error: seed=[1: not an override Hydra can read (no viable alternative at "
                                  "input '[1'")


def test_a_path_hydra_cannot_read_unquoted_says_how_to_quote_it():
    """"calls (1).csv", a browser's second download: Hydra's grammar error named neither the key
    nor the fix."""
    from hydra.errors import HydraException

    from ccexp.config_errors import config_error_line

    with pytest.raises(HydraException) as err:
        compose_cfg("data=csv", "data.train_path=/data/calls (1).csv")
    assert config_error_line(err.value) == (
        "data.train_path=/data/calls (1).csv: not an override Hydra can read (mismatched input ' (' expecting <EOF>; "
        "a value with spaces, brackets, parentheses or ~ needs quotes: \"data.train_path='/data/calls (1).csv'\")")
    with pytest.raises(HydraException) as err:  # no quoting hint where quotes would not help (a list key)
        compose_cfg("compare.constraints=test/acc>=0.5")
    assert "needs quotes" not in config_error_line(err.value)
    data = validate(compose_cfg("data=csv", "data.train_path='~/calls (1).csv'", "data.test_path='~/t.csv'")).data
    assert (data.train_path, data.test_path) == (str(Path.home() / "calls (1).csv"), str(Path.home() / "t.csv"))


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_cli_cuda_without_gpu_is_one_line():
    proc = _cli("backend=cuda", "model=tiny", "logger=none")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "backend=cuda" in lines[0] and "no CUDA GPU" in lines[0]


def test_method_names_match_the_registry():
    from ccexp.config import METHOD_NAMES
    from ccexp.methods import METHODS

    assert set(METHOD_NAMES) == set(METHODS)


def test_fp16_autocast_is_refused_on_cpu():
    from ccexp.backends.lightning import resolve_precision

    with pytest.raises(ConfigError, match=r"backend\.precision=16-mixed"):
        resolve_precision("16-mixed", "cpu")
    assert resolve_precision("32-true", "cpu") == "32-true"


def test_auto_precision_on_a_gpu_without_bf16_is_fp16(monkeypatch):
    """torch's is_bf16_supported() says yes on a T4 or V100 too (bf16 emulated, slowly): auto asks
    whether the GPU has bf16 itself."""
    import torch

    from ccexp.backends.lightning import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert resolve_precision("auto", "cuda") == "16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_precision("auto", "cuda") == "bf16-mixed"


def test_seed_from_the_environment(monkeypatch):
    monkeypatch.setenv("CCEXP_TEST_SEED", "7")  # ${oc.env:...} resolves to text
    assert validate(compose_cfg("seed=${oc.env:CCEXP_TEST_SEED}")).seed == 7


def test_groups_interpolate_each_other_and_escapes_stay_text():
    """A group may name another's value (compare.metric: ${objective.metric}); text that
    escapes \\${...} keeps it as text; an interpolation that fails names its key once."""
    rc = validate(compose_cfg("objective.metric=val/ppl", "compare.metric=${objective.metric}",
                              "compare.direction=${objective.direction}",
                              "data=csv", "data.instruction=Cost \\${price} for the ${.task_name}"))
    assert rc.compare.metric == "val/ppl" and rc.data.instruction == "Cost ${price} for the intent"
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg("compare.metric=${objective.metirc}"))
    assert str(err.value) == "compare.metric: Interpolation key 'objective.metirc' not found"


def test_an_unknown_top_level_key_is_refused_with_the_nearest():
    """+sed=1 or +lr=1e-3 compose (a new key), and no run would ever read them."""
    with pytest.raises(ConfigError, match=r"^sed: not a key ccexp reads \(did you mean seed\?\)$"):
        validate(compose_cfg("model=tiny", "+sed=1"))
    with pytest.raises(ConfigError, match=r"^lr: not a key ccexp reads \(python -m ccexp --cfg job lists the keys\)$"):
        validate(compose_cfg("model=tiny", "+lr=0.001"))


def test_the_default_model_keeps_every_synthetic_all_in_one_prompt_whole(tokenizer):
    """An all-in-one analysis (task_mix=analytics_json) runs to 1,233 tokens on the synthetic
    corpus: at the default model's max_seq_len of 1,024 about a quarter of them lost their start,
    the system prompt and the instruction with it, in training and in generation alike."""
    from ccexp.data import build_splits
    from ccexp.data.batching import EncodedDataset

    rc = validate(compose_cfg("task_mix=analytics_json", "data_size.train=300"))
    assert rc.model.name == "smollm2_135m"  # the tiny fixture's tokenizer is the embedded model's
    splits = build_splits(rc.data, rc.data_size, rc.task_mix)
    dataset = EncodedDataset(tokenizer, splits["train"] + splits["test"], rc.model.max_seq_len)
    assert max(len(item.input_ids) for item in dataset.items) > 1024 and dataset.truncated == 0


def test_the_readme_group_table_names_the_keys_a_user_tunes():
    """README "Choosing what runs" names each group's tuning keys, with the trainer's defaults as conf/ has them."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Choosing what runs")[1].split("\n## ")[0]
    for key in ("method.target_modules", "method.init_text", "backend.precision", "backend.num_threads",
                "backend.packed_weights", "eval.batch_size"):
        assert f"`{key}`" in section, key
    trainer = validate(compose_cfg()).trainer
    for key in ("weight_decay", "max_grad_norm", "max_epochs", "grad_accum", "warmup_ratio",
                "early_stopping_patience"):
        assert f"`{key}` ({getattr(trainer, key)}" in section, key


def test_a_task_mix_given_whole_is_the_mix_trained():
    """task_mix.weights={issue: 1, journey: 1} trained all six tasks: Hydra merged the mapping into
    task_mix=all's. Given whole it is the mix; a key given alone still adds to the option's."""
    from ccexp.config import mix_given_whole
    from ccexp.data import build_splits

    whole = ["model=tiny", "data_size=tiny", "task_mix.weights={issue: 1, journey: 1}"]
    cfg = compose_cfg(*whole)
    assert len(cfg.task_mix.weights) == 6  # what Hydra composes
    mix_given_whole(cfg, whole)
    rc = validate(cfg)
    assert dict(rc.task_mix.weights) == {"issue": 1, "journey": 1}
    assert rc.task_mix.name == "issue+journey"  # in run names, tags and reports: not task_mix=all's
    assert {ex["task"] for split in build_splits(rc.data, rc.data_size, rc.task_mix).values() for ex in split} == {
        "issue", "journey"}
    named = [*whole, "task_mix.name=two"]
    cfg = compose_cfg(*named)
    mix_given_whole(cfg, named)
    assert cfg.task_mix.name == "two"
    added = ["+task_mix.weights.reply=1"]
    cfg = compose_cfg(*added)
    mix_given_whole(cfg, added)
    assert len(validate(cfg).task_mix.weights) == 7 and cfg.task_mix.name == "all"


@pytest.mark.parametrize("override,line", [
    ("objective=abc", "objective: expected a mapping with keys metric, direction, got 'abc'"),
    ("objective=null", "objective: expected a mapping with keys metric, direction, got None"),
])
def test_a_mapping_replaced_by_a_value_names_the_key(override, line):
    """objective is conf/config.yaml's own mapping, not a group: Hydra lets a value replace it,
    which OmegaConf's merge onto the schema then refused in a traceback."""
    with pytest.raises(ConfigError, match=f"^{re.escape(line)}$"):
        validate(compose_cfg(override))


@pytest.mark.parametrize("override", ["method=null", "experiment=null"])
def test_cli_a_group_set_to_null_is_one_line(override):
    """Hydra's defaults list raises a ValueError (a traceback, exit 1) for a group given null."""
    proc = subprocess.run([sys.executable, "-m", "ccexp", override, "--cfg", "job"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    group = override.partition("=")[0]
    assert proc.stderr.startswith(f"ccexp: error: {override}: a config group takes the name of one of its options "
                                  f"(conf/{group}/: ")
    assert proc.stderr.count("\n") == 1


@pytest.mark.parametrize("group,option", [(g, o) for g, o in OPTIONS if g in ("method", "backend", "data", "logger")])
def test_the_fields_an_option_reads_are_its_yamls_keys(group, option):
    from ccexp.config import OPTION_FIELDS

    assert set(compose_cfg(f"{group}={option}")[group]) == set(OPTION_FIELDS[group][option])


@pytest.mark.parametrize("overrides,line", [
    (["method=prompt_tuning", "+method.target_modules=[q_proj]"],
     "method.target_modules: not read by method=prompt_tuning (method=lora and method=qlora read it); drop it"),
    (["method=prompt_tuning", "+method.r=8"], "method.r: not read by method=prompt_tuning"),
    (["+method.num_virtual_tokens=8"], "method.num_virtual_tokens: not read by method=lora"),
    (["+method.quant_type=fp4"], "method.quant_type: not read by method=lora (method=qlora reads it); drop it"),
    (["method.name=prompt_tuning"], "method.r: not read by method=prompt_tuning"),
    (["backend=mlx", "+backend.attention=eager"], "backend.attention: not read by backend=mlx"),
    (["data=twcs", "+data.text_column=x"], "data.text_column: not read by data=twcs"),
    (["data=csv", "+data.top_brands=3"], "data.top_brands: not read by data=csv (data=twcs reads it); drop it"),
    (["logger=csv", "+logger.mode=offline"], "logger.mode: not read by logger=csv (logger=wandb reads it); drop it"),
    (["logger=none", "+logger.project=x"], "logger.project: not read by logger=none"),
])
def test_a_field_the_option_does_not_read_is_refused(overrides, line):
    """One schema serves every option of a group: a field of another option, added with "+", passed
    it and was then read by nothing (prompt tuning ran with target_modules it never used)."""
    with pytest.raises(ConfigError, match=f"^{re.escape(line)}"):
        validate(compose_cfg(*overrides))


def test_csv_logger_has_no_project_it_would_ignore():
    """logger=csv logger.project=x was taken and never read: the CSV logs have no project."""
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose_cfg("logger=csv", "logger.project=x")


def test_cli_a_search_without_multirun_is_one_line(tmp_path):
    """Without -m Hydra runs the task once with the search's defaults: no trial, no study, a plain
    run of the default lr and rank that looked like the search's start."""
    proc = subprocess.run([sys.executable, "-m", "ccexp", "hparams_search=lora_optuna", *FAST,
                           f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == ("ccexp: error: hparams_search=lora_optuna: an Optuna search runs with -m (python -m ccexp "
                           "-m hparams_search=lora_optuna ...); without it, it would be one run of the defaults\n")
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("override,line", [
    # Hydra's merge of the override failed first, in OmegaConf's "Cannot merge DictConfig with ListConfig"
    ("task_mix.weights=[quality]", "task_mix.weights: expected a mapping, got a list"),
    ("model.lora_targets={q_proj: 1}", "model.lora_targets: expected a list, got a mapping"),
    # Hydra's "Error parsing override 'lora'; missing EQUAL at '<EOF>'; See https://..." named no fix
    ("lora", "lora: not an override (expected key=value; an option of a group: method=lora)"),
    ("method:lora", "method:lora: not an override (expected key=value: method=lora)"),
    ("method.r:8", "method.r:8: not an override (expected key=value: method.r=8)"),
    ("fast", "fast: not an override (expected key=value; an option of a group: trainer=fast)"),
    ("nothing", "nothing: not an override (expected key=value, e.g. method=qlora)"),
])
def test_an_override_hydra_cannot_take_is_said_in_one_line(override, line):
    from hydra.errors import HydraException

    from ccexp.config_errors import config_error_line

    with pytest.raises(HydraException) as err:
        compose_cfg(override)
    assert config_error_line(err.value) == line


def test_cli_a_flag_hydra_does_not_take_is_one_line():
    """argparse printed Hydra's usage block (eight lines) before the error."""
    proc = _cli("--method=lora")
    assert proc.returncode == 2
    assert proc.stderr == ("ccexp: error: --method=lora: not a flag ccexp takes; settings are key=value, without "
                           "dashes: method=lora (--help for usage)\n")
    proc = _cli("--cfg", "jobs")
    assert proc.returncode == 2
    assert proc.stderr == ("ccexp: error: argument --cfg/-c: invalid choice: 'jobs' (choose from 'job', 'hydra', "
                           "'all') (--help for usage)\n")

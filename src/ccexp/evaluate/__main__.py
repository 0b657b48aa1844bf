"""``python -m ccexp.evaluate adapter=<run dir> [key=value ...]``: evaluate a saved adapter again.

The run's own ``config.yaml`` rebuilds the model, method and data; ``key=value`` overrides
change fields of it (e.g. a real test file and a bigger generation sample:
``data.test_path=… data_size.test=3080 eval.generate_examples=3080``). Results go to
``<run dir>/eval/<timestamp>/`` (or ``out=<dir>``): metrics.json, predictions.jsonl, config.yaml.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ccexp.cli import output_dir, user_path, yaml_problem
from ccexp.config import _SCHEMAS, KEYS_HINT, TRAINING_ONLY, ConfigError, did_you_mean, mix_given_whole
from ccexp.environment import anchor_paths, anchor_relative_paths

if TYPE_CHECKING:
    from ccexp.backends.base import AdapterMismatch

USAGE = "usage: python -m ccexp.evaluate adapter=<run dir> [out=<dir>] [group.key=value ...]"
HELP = f"""{USAGE}

Evaluate a saved adapter again: the run's own config.yaml rebuilds its model, method and data,
the test split is scored as the run scored it, and nothing is trained.

  adapter=<run dir>   a run's output dir (its config.yaml and adapter/); required
  out=<dir>           where results go (default: <run dir>/eval/<timestamp>/): metrics.json,
                      predictions.jsonl, config.yaml
  group.key=value     change a field of the saved config, e.g. a real test file and a bigger
                      sample: data.test_path=<file> data_size.test=3080 eval.generate_examples=3080;
                      backend.name=, data.name=, logger.name= choose another option of those groups.
                      Keys only training reads, and the method, are the adapter's own: refused.

Exit codes: 0 finished, 1 the evaluation failed, 2 bad arguments, 130/143/138 stopped by a
signal. README: Evaluation."""
_GROUPS = ("model", "method", "backend", "task_mix", "data_size", "data", "trainer", "eval", "logger")
# A group's name: for the method, what the adapter was trained as (qlora: on a 4-bit base); for
# the others, a label the evaluation would record while the saved fields decide what runs.
_NAMES = ("method.name", "task_mix.name", "data_size.name", "model.name")
# Groups whose name chooses something real (README: Evaluation): <group>.name=<option> scores the
# adapter on another device, dataset or tracker.
_CHOSEN_BY_NAME = ("backend", "data", "logger")


def _refusal(arg: str, key: str, run_dir: Path) -> str:
    """Why ``arg`` (a group swapped, a group's name, or a key or group only training reads) cannot apply to
    the saved run, in terms of what it has: the method its adapter was trained with, the name key
    that chooses a backend, data or logger option, a field of the group to override, the value the
    run trained with."""
    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        saved = {}
    group = key.split(".")[0]
    node = saved.get(group) if isinstance(saved, dict) and isinstance(saved.get(group), dict) else {}
    if key == group and all(f"{group}.{f}" in TRAINING_ONLY for f in _SCHEMAS[group].__dataclass_fields__):
        return f"argument {arg!r}: only training reads the {group} group; the saved adapter was trained with its own"
    if key in TRAINING_ONLY:
        field = key.split(".", 1)[1]
        trained = f" (the run's: {node[field]})" if field in node else ""
        return (f"argument {arg!r}: only training reads {key}; the saved adapter was trained with its own"
                f"{trained}")
    if group == "method":  # what the adapter is: another method's is another run's (qlora: a 4-bit base)
        trained = f"method={node['name']}" if node.get("name") else "its own method"
        return f"argument {arg!r}: the adapter was trained with {trained}; an adapter of another method is another run's"
    if key in _CHOSEN_BY_NAME:
        option = arg.partition("=")[2]
        return (f"argument {arg!r}: a saved run's groups cannot be swapped; choose the option by its name instead: "
                f"{group}.name={option}")
    if key in _NAMES:
        return f"argument {arg!r}: a label: the saved run's fields decide what runs; override those instead"
    field = next((f for f, v in node.items() if f != "name" and not isinstance(v, (dict, list))
                  and f"{group}.{f}" not in TRAINING_ONLY), "<field>")
    return (f"argument {arg!r}: a saved run's groups cannot be swapped; override their fields instead, "
            f"e.g. {group}.{field}=...")


def _json_dict(path: Path) -> dict:
    """A JSON file's mapping; {} where it is missing, unreadable or not a mapping."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def parse_args(argv: list[str]) -> tuple[Path, Path | None, list[str]]:
    """(run dir, output dir or None, config overrides)."""
    run_dir, out, overrides, refused = None, None, [], []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"argument {arg!r}: expected key=value; {USAGE}")
        if key == "adapter":
            run_dir = user_path(value)
        elif key == "out":
            out = user_path(value)
        elif key == "backend.fuse":  # fusing follows training; an evaluation would silently skip it
            raise ConfigError(f"argument {arg!r}: evaluate does not fuse; the run fuses its adapter after training "
                              "(python -m ccexp backend=mlx backend.fuse=true)")
        elif key in _GROUPS or key.lstrip("+~") in _NAMES or key.lstrip("+~") in TRAINING_ONLY:
            # The saved config is resolved: there is no group file to swap in, only fields.
            refused.append((arg, key.lstrip("+~")))
        elif key.startswith(("+", "~")):  # Hydra's add/delete: the saved config has no defaults list to edit
            raise ConfigError(f"argument {arg!r}: evaluate takes no + or ~ prefix (it changes the saved config's "
                              "own keys, as key=value)")
        else:
            overrides.append(arg)
    if run_dir is None:
        raise ConfigError(f"missing adapter=<run dir>; {USAGE}")
    if refused:  # said in the saved run's terms, so once its dir is known
        raise ConfigError(_refusal(*refused[0], run_dir))
    if out is not None:
        output_dir(out, ConfigError, "out=")  # run() creates it, once the config validates
    if not (run_dir / "config.yaml").exists():
        raise ConfigError(f"{run_dir / 'config.yaml'}: not found; expected a run dir written by python -m ccexp")
    if not (run_dir / "adapter").exists():  # a run stopped before its adapter was saved: how it goes on
        from ccexp.resume import resume_hint

        metrics, environment = _json_dict(run_dir / "metrics.json"), _json_dict(run_dir / "environment.json")
        if "time/load_s" in metrics or "adapter" in environment:  # what an evaluation records, not a run
            scored = environment.get("adapter")
            of = f", adapter={Path(scored).parent}" if isinstance(scored, str) else ""
            raise ConfigError(f"{run_dir / 'adapter'}: not found; {run_dir} is an evaluation's dir: expected the run "
                              f"dir it scored{of}")
        if "train/steps" in metrics:  # run() records train/steps once the adapter is saved
            raise ConfigError(f"{run_dir / 'adapter'}: not found; the run saved its adapter there, since moved or "
                              "deleted: expected the run dir as training left it")
        raise ConfigError(f"{run_dir / 'adapter'}: not found; the run saved no adapter (it stopped before training "
                          f"finished): {resume_hint(run_dir)}")
    if out is not None:
        _check_out(out, run_dir)
    return run_dir, out, overrides


def _check_out(out: Path, run_dir: Path) -> None:
    """An evaluation writes metrics.json, predictions.jsonl, config.yaml, environment.json and csv/:
    into the run's own dir (or an earlier evaluation's) they would replace the results they are
    meant to sit beside; into an adapter's folder they would ship with it."""
    instead = f"expected a new folder, or leave out= out for {run_dir / 'eval'}/<time>"
    if (out / "metrics.json").exists():
        whose = "the adapter's own run dir" if out.resolve() == run_dir.resolve() else "a folder with results"
        raise ConfigError(f"out={out}: {whose} (its metrics.json would be replaced); {instead}")
    from ccexp.run import ADAPTER_FILES

    if out.resolve().is_relative_to((run_dir / "adapter").resolve()):
        raise ConfigError(f"out={out}: the adapter's own folder (results beside its files would ship with it); "
                          f"{instead}")
    held = next((name for name in ADAPTER_FILES if (out / name).is_file()), None)
    if held:
        raise ConfigError(f"out={out}: an adapter's folder (it holds {held}; results beside its files would ship "
                          f"with it); {instead}")


def _check_groups(saved, path: Path) -> None:
    """A config.yaml that is not a mapping of groups (a list; ``model: 3``) fails in one line
    naming the file, not in OmegaConf's traceback."""
    if not isinstance(saved, DictConfig):
        raise ConfigError(f"{path}: expected a mapping of config groups (model:, method:, data:, ...), got a list")
    for group in _GROUPS:
        value = saved.get(group)
        if value is not None and not isinstance(value, DictConfig):
            raise ConfigError(f"{path}: {group}: expected a mapping of the group's fields, got {value!r}")


def _check_keys(saved: DictConfig, overrides: list[str]) -> None:
    """A field the saved group lacks is one its option does not use (method.r on a prompt-tuning
    run): training refuses it, and evaluated with it, config.yaml would record a setting nothing
    read. Refused in training's words. A free-form field's own keys (task_mix.weights.reply) may be
    new; a field the run's option has now, which an older run's config.yaml predates, is taken.
    The option is the one this evaluation names (``data.name=csv`` brings csv's paths) or the
    run's; a group whose options have no name (eval, trainer) takes its schema's fields."""
    from dataclasses import fields

    from ccexp.config_errors import _options_with, options_having

    named = {key.removesuffix(".name"): value for key, _, value in (a.partition("=") for a in overrides)
             if key.endswith(".name") and key.count(".") == 1}
    for arg in overrides:
        group, _, rest = arg.partition("=")[0].partition(".")
        field, node = rest.split(".")[0], saved.get(group)
        if not field or not isinstance(node, DictConfig) or field in node:
            continue
        option = named.get(group, node.get("name"))
        if option is None and group in _SCHEMAS and field in {f.name for f in fields(_SCHEMAS[group])}:
            continue
        if option is not None and option in _options_with(group, field):
            continue
        key = f"{group}.{field}"
        raise ConfigError(f"{key}: not a key of the config "  # as training says it (ccexp.config_errors)
                          f"({did_you_mean(key, [f'{group}.{k}' for k in node], KEYS_HINT)}){options_having(group, field)}")


def _check_backend_family(saved: DictConfig, overrides: list[str]) -> None:
    """``backend.name`` may move an adapter between torch devices (cpu, cuda), not between torch and
    MLX: mlx-lm's adapter files are not peft's, and the load would fail only after the model had
    loaded, in a missing-file line that hides why. auto picks a torch device."""
    given = next((a for a in reversed(overrides) if a.partition("=")[0] == "backend.name"), None)
    trained = OmegaConf.select(saved, "backend.name", default=None)
    if given is None or trained is None or (given.partition("=")[2] == "mlx") == (trained == "mlx"):
        return
    kind, use = ("an mlx-lm adapter", "mlx") if trained == "mlx" else ("a peft adapter", "cpu or cuda")
    raise ConfigError(f"argument {given!r}: the adapter is {kind} (the run's backend={trained}); "
                      f"evaluate it with backend.name={use}")


def _check_device(cfg: DictConfig, overrides: list[str]) -> None:
    """A GPU run's adapter evaluated on a machine without one: training's message says backend=cpu,
    a group swap this command refuses, so the one line names the key evaluate takes."""
    import torch

    if OmegaConf.select(cfg, "backend.name", default=None) != "cuda" or torch.cuda.is_available():
        return
    given = any(a.partition("=")[0] == "backend.name" for a in overrides)
    raise ConfigError(f"backend.name=cuda{'' if given else ' (the run trained on it)'}: torch sees no CUDA GPU on "
                      "this machine; evaluate with backend.name=cpu (or backend.name=auto)")


def _option(group: str, name: str) -> DictConfig | None:
    """conf/<group>/<name>.yaml as ``<group>=<name>`` composes it in training (its defaults list
    applied, its ``${...}`` kept, to follow the fields given with it: data.task_name into the
    instruction); None where there is no such option (validation then names the key)."""
    from hydra import compose, initialize_config_dir

    from ccexp.__main__ import CONFIG_DIR

    if not (Path(CONFIG_DIR) / group / f"{name}.yaml").is_file():
        return None
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        composed = compose(config_name="config", overrides=[f"{group}={name}"])
    return OmegaConf.create(OmegaConf.to_container(composed[group], resolve=False))


def _take_named_options(saved: DictConfig, given: DictConfig) -> None:
    """A backend, data or logger option named here other than the run's (data.name=csv on a
    synthetic run) replaces the run's group with that option's YAML under the fields given, as
    training composes it: the run's fields were another option's, and the schema's defaults are
    no option's (csv's instruction). Both configs are changed in place. Not the backend: the torch
    ones (auto, cpu, cuda) share auto.yaml's fields, so only the device changes and the run's
    settings (precision, attention, ...) stay its adapter's; torch to MLX is refused
    (``_check_backend_family``)."""
    for group in ("data", "logger"):
        name = OmegaConf.select(given, f"{group}.name", default=None)
        if name is None or not isinstance(saved.get(group), DictConfig) or name == saved[group].get("name"):
            continue
        option = _option(group, str(name))
        if option is not None:
            given[group] = OmegaConf.merge(option, given[group])
            saved[group] = OmegaConf.create()  # emptied where it stands: config.yaml keeps the groups' order


def _mismatch(err: AdapterMismatch, run_dir: Path, overrides: list[str]) -> str:
    """The adapter against the config it was loaded with, in terms of who set the config's value:
    an override given here (drop it), or the run's own config.yaml (the adapter is another run's)."""
    keys = re.findall(r"\b(?:model|method)(?:\.\w+)?", err.key)  # "method.alpha / method.r", "model"
    given = [arg.partition("=")[0] for arg in overrides]
    if any(g == k or g.startswith(k + ".") for g in given for k in keys):
        return err.line("expected the adapter's own setting (drop the override)")
    return err.line("the saved config and the adapter disagree: expected the adapter this run saved, or this one "
                    "evaluated with the run dir that trained it", run_dir / "config.yaml")


def _now() -> str:
    return time.strftime("%Y-%m-%d_%H-%M-%S")


def _new_eval_dir(run_dir: Path) -> Path:
    """<run dir>/eval/<time>, made here so two evaluations started in the same second each get
    their own (the second <time>_1) instead of writing over each other."""
    stamp = _now()
    out, n = run_dir / "eval" / stamp, 0
    while True:
        try:
            out.mkdir(parents=True)
            return out
        except FileExistsError:
            n += 1
            out = run_dir / "eval" / f"{stamp}_{n}"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    run_dir = out = None
    args = sys.argv[1:] if argv is None else argv
    if "--help" in args or "-h" in args:  # a question, not a bad argument
        print(HELP)
        return 0
    try:
        run_dir, out, overrides = parse_args(args)
        try:
            saved = OmegaConf.load(run_dir / "config.yaml")
        except yaml.YAMLError as err:
            raise ConfigError(f"{run_dir / 'config.yaml'}: not valid YAML ({yaml_problem(err)})") from None
        except OSError as err:  # OmegaConf's "Invalid loaded object type: int" for a file holding one number
            raise ConfigError(f"{run_dir / 'config.yaml'}: expected a mapping of config groups (model:, method:, "
                              f"data:, ...) ({err})") from None
        _check_groups(saved, run_dir / "config.yaml")
        _check_keys(saved, overrides)
        _check_backend_family(saved, overrides)
        anchor_relative_paths(saved, run_dir)
        try:
            given = OmegaConf.from_dotlist(overrides)
            _take_named_options(saved, given)
            # Relative paths given here name files where the evaluation runs: recorded absolute, as
            # the run's own are, since config.yaml keeps no record of that folder.
            anchor_paths(given, Path.cwd(), OmegaConf.select(saved, "model.source", default=None))
            cfg = OmegaConf.merge(saved, given)
            # The mix given whole is the mix scored (a task left out gets none): merged into the
            # run's, {issue: 1, journey: 1} changed nothing and every task was scored.
            mix_given_whole(cfg, overrides)
        except (OmegaConfBaseException, ValueError) as err:
            raise ConfigError(f"{run_dir / 'config.yaml'} + {overrides}: {str(err).splitlines()[0]}") from None
        from ccexp.backends.base import AdapterMismatch  # after the arguments: it loads torch
        from ccexp.run import LOCK_FILE, run

        _check_device(cfg, overrides)
        made = out is None
        out = out or _new_eval_dir(run_dir)
        try:
            try:
                metrics = run(cfg, out, run_name=f"eval:{run_dir.name}", adapter=run_dir / "adapter")
            except AdapterMismatch as err:
                raise ConfigError(_mismatch(err, run_dir, overrides)) from None
        except ConfigError:
            # Refused before anything was written (the run's lock file aside): no empty dir left.
            if made and not any(p.name != LOCK_FILE for p in out.iterdir()):
                (out / LOCK_FILE).unlink(missing_ok=True)
                out.rmdir()
                if not any(out.parent.iterdir()):
                    out.parent.rmdir()
            raise
    except ConfigError as err:
        print(f"ccexp.evaluate: error: {err}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SystemExit) as err:  # SIGTERM, SIGUSR1, Ctrl-C: said, with the usual exit code
        from ccexp.sweep import interruption

        stopped = interruption(err, out, run_dir)
        if stopped is None or run_dir is None:  # before the arguments were read: nothing to evaluate again
            raise
        print(f"ccexp.evaluate: error: {stopped[0]}" + (f" ({out})" if out else ""), file=sys.stderr)
        return stopped[1]
    return 0 if metrics.get("status") == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())

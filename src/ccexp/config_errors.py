"""A config error as one line: Hydra's own errors (several lines and a hint about
HYDRA_FULL_ERROR) turned into one that names the key, with the nearest keys or the options that
have it; and the line for an objective metric a run does not report."""

from __future__ import annotations

import math
import re
from dataclasses import fields
from pathlib import Path
from typing import Optional

from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig

from ccexp.config import _SCHEMAS, KEYS_HINT, RANDOM_ARCH, ConfigError, did_you_mean, plain_type_error


def options_having(group: str, key: str) -> str:
    """"; method=prompt_tuning has it": the options of ``group`` whose YAML sets ``key``, for the
    line that refuses it under another option; "" when none does."""
    named = [f"{group}={o}" for o in _options_with(group, key)]
    if not named:
        return ""
    return f"; {', '.join(named[:-1]) + ' and ' if len(named) > 1 else ''}{named[-1]} " + \
        ("has it" if len(named) == 1 else "have it")


def _options_with(group: str, key: str) -> list[str]:
    """The options of a config group whose YAML sets ``key`` (the packaged conf/ or the repo's)."""
    import yaml

    from ccexp.__main__ import CONFIG_DIR

    loaded = {}
    for path in sorted((Path(CONFIG_DIR) / group).glob("*.yaml")):
        try:
            loaded[path.stem] = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue

    def has(option: str, seen: tuple = ()) -> bool:  # its own keys, or an option its defaults list extends
        node = loaded.get(option, {})
        bases = [d for d in node.get("defaults", []) if isinstance(d, str) and d in loaded and d not in seen]
        return key in node or any(has(base, (*seen, option)) for base in bases)

    return [option for option in loaded if has(option)]


PARAMS = "hydra.sweeper.params."


def search_space_key_line(override: str) -> Optional[str]:
    """``hydra.sweeper.params.method.r='choice(4,8)'``: the search space's keys hold a literal dot,
    so Hydra reads this as a key ``r`` under ``params.method``, and says "did you mean" the very
    key typed (the Optuna sweeper) or fails an assertion (the basic one, whose params are null).
    The line for such an override, else None."""
    key, equals, value = override.partition("=")
    name = key.lstrip("+~").removeprefix(PARAMS)
    if not equals or not key.lstrip("+~").startswith(PARAMS) or "." not in name:
        return None
    return (f"{override}: the search space's keys hold a dot ({name}), which Hydra reads here as a key "
            f"{name.rpartition('.')[2]} under {PARAMS}{name.rpartition('.')[0]}; search-space keys are given on the "
            f"command line, with -m: {name}={value}")


def config_error_line(err: ConfigError | HydraException) -> str:
    """Hydra's own errors (a mistyped override key, a config group option that does not exist, an
    override it cannot parse) are several lines with a hint about HYDRA_FULL_ERROR: one line here,
    naming the key. A ConfigError is one line already."""
    if isinstance(err, ConfigError):
        return str(err)
    text = str(err)
    cause = err.__cause__
    full_key, parent = getattr(cause, "full_key", None), getattr(cause, "parent_node", None)
    overridden = re.search(r"Could not override '([^']+)'", text)
    if overridden and overridden.group(1).startswith(PARAMS):  # hydra.sweeper.params.method.r, value unknown here
        return search_space_key_line(f"{overridden.group(1)}=<its values>") or text.splitlines()[0]
    added = re.search(r"use (\+\S+)", text)
    if full_key and isinstance(parent, DictConfig) and added:  # "Could not override 'trainer.max_step'"
        prefix = full_key.rpartition(".")[0]
        keys = [f"{prefix}.{k}" if prefix else str(k) for k in parent.keys()]
        line = f"{full_key}: not a key of the config ({did_you_mean(full_key, keys, KEYS_HINT)})"
        # "+key=value" only for a new key of a free-form field (+task_mix.weights.reply=1). A
        # schema field the option's YAML leaves out is one that option does not use (method.r
        # with prompt_tuning), and a key no schema has, validate() would refuse after all.
        group, _, rest = full_key.partition(".")
        schema = {f.name: f for f in fields(_SCHEMAS[group])} if group in _SCHEMAS else {}
        first, *inner = rest.split(".")
        free_form = first in schema and "dict" in str(schema[first].type) and bool(inner)
        if (group, first) == ("model", "arch"):  # its keys are RANDOM_ARCH's: "+model.arch.foo" is refused next
            free_form = free_form and inner[0] in RANDOM_ARCH
        if free_form:
            line += f"; {added.group(1)} adds it"
        elif first in schema and not inner:  # a field of another option (num_virtual_tokens with lora)
            line += options_having(group, first)
        return line
    if isinstance(err, OverrideParseException) and "=" not in err.override:  # lora, method:lora
        return f"{err.override}: not an override (expected key=value{_override_meant(err.override.strip())})"
    if isinstance(err, OverrideParseException) and "=" in err.override:  # a path with a space, () or [], ~
        key, _, value = err.override.partition("=")
        why = err.message.splitlines()[0] if err.message else "cannot be parsed"
        # A path with a space, (), ~, or [] inside it ("calls[4].csv"; a leading [ is a list).
        if re.fullmatch(r"\s*choice\s*\(\s*\)\s*", value):  # quoting it would hide the mistake
            why += f"; choice() needs at least one value: {key}=choice(a,b)"
        elif "'" not in value and (any(c in value for c in " ()~") or "[" in value[1:] and not value.startswith("[")):
            why += f"; a value with spaces, brackets, parentheses or ~ needs quotes: \"{key}='{value}'\""
        return f"{err.override}: not an override Hydra can read ({why})"
    merging = re.match(r"Error merging override ([^=\s]+)=", text)
    if merging and cause is not None and str(cause).strip():  # a typed field's value: hydra.launcher.n_jobs=abc
        why = plain_type_error(str(cause).strip().splitlines()[0])
        if why == "Cannot merge DictConfig with ListConfig":  # OmegaConf's words whichever was given
            given = text.partition(f"{merging.group(1)}=")[2].lstrip()
            why = "expected a list, got a mapping" if given.startswith("{") else "expected a mapping, got a list"
        return f"{merging.group(1)}: {why}"
    if isinstance(err, MissingConfigException) and err.options is not None:  # "Could not find 'method/lorax'"
        found = re.search(r"Could not find '([^']+)'", text)
        where = found.group(1).rpartition("/") if found else ("?", "", "?")
        return f"{where[0]}={where[2]}: no such option, expected one of {', '.join(err.options)}"
    lines = [line.strip() for line in text.split("Config search path:")[0].splitlines() if line.strip()]
    return "; ".join(lines)


def _override_meant(word: str) -> str:
    """The override a word without "=" was likely meant as: YAML's ``method:lora``, or an option's
    name alone (``lora``: method=lora)."""
    from ccexp.__main__ import CONFIG_DIR

    key, colon, value = word.partition(":")
    if colon and key.strip() and value.strip():
        return f": {key.strip()}={value.strip()}"
    options = sorted(p.relative_to(CONFIG_DIR).with_suffix("").as_posix() for p in Path(CONFIG_DIR).rglob(f"{word}.yaml")
                     if p.parent != Path(CONFIG_DIR)) if re.fullmatch(r"[\w-]+", word) else []
    named = [f"{option.rpartition('/')[0]}={word}" for option in options]
    return f"; an option of a group: {' or '.join(named)}" if named else ", e.g. method=qlora"


def numeric_keys(metrics: dict) -> list[str]:
    return [k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]


OBJECTIVE_MISSING = "is not among this run's metrics"  # how a search's plugin tells this line apart


def objective_value(value) -> Optional[float]:
    """A metric as a search's objective: a finite number, else None (NaN: a diverged run; null:
    nothing to score), which the Optuna sweeper records as a failed trial (optuna 2.10 refuses
    to be told a NaN)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def objective_not_a_number(key: str, value) -> str:
    """A search's objective the run has, but without a number: Optuna fails the trial."""
    why = "null in this run's metrics (no answer gave a number)" if value is None else \
        f"{value!r} in this run's metrics (a diverged run?)"
    return f"objective.metric: {key} is {why}, not a value to optimise; the Optuna trial is recorded as failed"


def objective_missing(key: str, metrics: dict) -> str:
    hint = did_you_mean(key, numeric_keys(metrics), "see the run's metrics.json for the keys")
    return f"objective.metric: {key!r} {OBJECTIVE_MISSING} ({hint}); a sweep gets no value from it"

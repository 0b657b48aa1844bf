"""``python -m ccexp.data describe|export [overrides...] [--out DIR]``: look at the data a run
would use, or write it out, with the same configs and overrides as ``python -m ccexp``.

    python -m ccexp.data describe data=csv model=tiny
    python -m ccexp.data export data=jsonl data_size=small --out exports/dstc11 [--overwrite]
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import sys
from functools import partial
from pathlib import Path
from typing import Optional

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from rich.console import Console

from ccexp.__main__ import CONFIG_DIR
from ccexp.cli import output_dir
from ccexp.config import ConfigError, DataConfig, RunConfig, mix_given_whole, validate
from ccexp.config_errors import config_error_line
from ccexp.data import build_splits, to_dataset_dict
from ccexp.data.card import dataset_card, print_card
from ccexp.data.formats import MLX_FILES, write_chatml, write_mlx_layout
from ccexp.data.splitting import unshuffled
from ccexp.scoring import field_checks

MLX_BATCH = 4  # mlx_lm.lora's default --batch-size

USAGE = ("usage: python -m ccexp.data {describe,export} [key=value ...] [--out DIR (default data/<data>-<size>)] "
         "[--overwrite]")
HELP = f"""{USAGE}

  describe      print the dataset card of the data a run would use: sizes, tasks, labels, token
                lengths, prompts also in train, the floor a constant answer reaches (and for
                data=synthetic the label-noise ceiling)
  export        write the splits as ChatML, the mlx-lm layout and a datasets.DatasetDict
  key=value     any override python -m ccexp takes (data=csv, data_size=small, model=tiny, ...)
  --out DIR     export's folder
  --overwrite   export over an earlier export in --out"""


def _parse(args: list[str]) -> tuple[list[str], Optional[str], bool]:
    overrides, out, overwrite = [], None, False
    while args:
        arg = args.pop(0)
        if arg == "--overwrite":
            overwrite = True
        elif arg == "--out":
            if not args:
                raise ConfigError("--out: expected a directory")
            out = args.pop(0)
        elif arg.startswith("--out="):
            out = arg.split("=", 1)[1]
            if not out:
                raise ConfigError("--out=: expected a directory, got nothing")
        elif arg.startswith("-"):
            raise ConfigError(f"{arg}: unknown option ({USAGE})")
        else:
            overrides.append(arg)
    return overrides, out, overwrite


def describe(rc: RunConfig, splits: dict, console: Console) -> dict:
    from ccexp.models import load_tokenizer, resolve_tokenizer_dir

    checks = field_checks(rc.eval)  # one rule for the floor, the ceiling and the run's scores
    noise = None
    if rc.data.name == "synthetic":
        from ccexp.data.synthetic import noise_report

        noise = noise_report(checks)
    tokenizer = load_tokenizer(resolve_tokenizer_dir(rc.model))
    card = dataset_card(splits, tokenizer, rc.model.max_seq_len, noise, checks)
    print_card(card, f"data={rc.data.name} data_size={rc.data_size.name} model={rc.model.name}", console)
    return card


def _check_targets(out: Path, inputs: dict[str, str], overwrite: bool) -> None:
    """Never lose data: an export that would write over a file it reads (a re-export of an
    export into its own folder) is refused, and one over an earlier export needs --overwrite."""
    targets = [out / "chatml" / f"{split}.jsonl" for split in MLX_FILES] + \
              [out / "mlx" / name for name in MLX_FILES.values()] + [out / "hf"]
    for key, path in inputs.items():
        source = Path(path).resolve()
        for target in targets:
            if source == target.resolve() or target.resolve() in source.parents:
                raise ConfigError(f"--out {out}: would write over {path} ({key}), which this export reads; "
                                  "expected another folder")
    if (out / "hf").exists() and not (out / "hf" / "dataset_dict.json").is_file():  # --overwrite replaces exports only
        raise ConfigError(f"--out {out}: {out / 'hf'} is not a DatasetDict an export wrote; expected another --out")
    earlier = next((t for t in targets if t.exists()), None)
    if earlier is not None and not overwrite:
        raise ConfigError(f"--out {out}: holds an earlier export ({earlier}); give another --out, or --overwrite "
                          "to replace it")


def export(splits: dict, out: Path, console: Console, inputs: dict[str, str], overwrite: bool = False,
           seed: int = DataConfig.seed) -> None:
    """``inputs``: the files the splits were read from, by key (never written over). ``seed``: the
    data.seed the printed commands read the files back with."""
    _check_targets(out, inputs, overwrite)
    # Written in the order data_size's shuffle turns back into the splits' own (the training
    # batches' order): a run on the files trains and scores as one on the source.
    splits = {split: unshuffled(examples, seed, split) for split, examples in splits.items()}
    output_dir(out, ConfigError, "--out", create=True)
    import datasets

    datasets.disable_progress_bars()
    try:
        chatml = {split: write_chatml(examples, out / "chatml" / f"{split}.jsonl") for split, examples in splits.items()}
        mlx = write_mlx_layout(splits, out / "mlx")
        if (out / "hf").is_dir():  # --overwrite: no shard of the earlier DatasetDict left beside the new one
            shutil.rmtree(out / "hf")
        to_dataset_dict(splits).save_to_disk(str(out / "hf"))
    except OSError as err:  # a read-only folder, a full disk
        raise ConfigError(f"--out {err.filename or out}: cannot write ({err.strerror or err})") from None
    # Printed as they are (no rich markup: a path may hold [brackets]), one line each for copying.
    say = partial(console.print, soft_wrap=True, markup=False, highlight=False)
    for split in splits:
        say(f"{split}: {len(splits[split])} examples -> {chatml[split]}, {mlx[split]}")
    # Every row exported, which data_size's default (tiny: 64 train) would cut on the way back in,
    # and the data.seed whose shuffle the files' order undoes.
    sizes = " ".join(f"data_size.{split}={len(examples)}" for split, examples in splits.items())
    sizes += f" data.seed={seed}" if seed != DataConfig.seed else ""
    say(f"as a datasets.DatasetDict: datasets.load_from_disk({str(out / 'hf')!r}), or "
        f"python -m ccexp data=hf {shell_override('data.train_path', out / 'hf')} {sizes}")
    paths = " ".join(shell_override(f"data.{split}_path", chatml[split]) for split in ("train", "val", "test"))
    say(f"train on it: python -m ccexp data=chatml {paths} {sizes}")
    # mlx-lm's loss covers the prompt unless asked, and its LoRA the last 16 blocks (a model of fewer
    # is refused); ccexp's covers the answer only, on every block. Its batches of 4 refuse a
    # smaller train or valid split.
    batch = min(MLX_BATCH, len(splits["train"]), len(splits["val"]))
    say(f"or with mlx-lm: mlx_lm.lora --train --mask-prompt --num-layers -1"
        f"{f' --batch-size {batch}' if batch < MLX_BATCH else ''} --data {shlex.quote(str(out / 'mlx'))} "
        "--model <model>")


def shell_override(key: str, value) -> str:
    """``key=value`` as a shell passes it to Hydra: a value with other characters than a plain
    path's in Hydra's double quotes (its grammar takes no spaces or parentheses unquoted), the
    whole quoted for the shell."""
    value = str(value)
    if not re.fullmatch(r"[\w./:@+%~-]+", value):
        # Backslashes before a quote (or the closing one) doubled, the quote escaped; no interpolation.
        value = '"' + re.sub(r'(\\*)("|$)', lambda m: m[1] * 2 + ("\\" + m[2] if m[2] else ""),
                             value).replace("${", "\\${") + '"'
    return shlex.quote(f"{key}={value}")


def main(argv: Optional[list[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--help" in args or "-h" in args:
        print(HELP)
        return 0
    if not args or args[0] not in ("describe", "export"):
        print(USAGE, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    console = Console()
    try:
        overrides, out, overwrite = _parse(args[1:])
        if args[0] == "describe" and (out is not None or overwrite):
            option = f"--out {out}" if out is not None else "--overwrite"
            raise ConfigError(f"{option}: describe writes nothing (it prints the dataset card); {option.split()[0]} "
                              "is export's")
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        mix_given_whole(cfg, overrides)  # the mix a run on these overrides trains
        rc = validate(cfg)
        if args[0] == "describe":
            describe(rc, build_splits(rc.data, rc.data_size, rc.task_mix), console)
        else:
            # Default: data/<source>-<size> in the folder run from (the repo root: its data/ folder).
            # ~ as for the data paths: the shell leaves --out=~/x as it is.
            target = Path(os.path.expanduser(out or f"data/{rc.data.name}-{rc.data_size.name}"))
            inputs = {f"data.{split}_path": getattr(rc.data, f"{split}_path", None) for split in ("train", "val", "test")}
            inputs = {key: path for key, path in inputs.items() if path}
            _check_targets(target, inputs, overwrite)  # before reading a large file, not after
            export(build_splits(rc.data, rc.data_size, rc.task_mix), target, console, inputs, overwrite,
                   rc.data.seed)
    except (ConfigError, HydraException) as err:
        print(f"ccexp.data: error: {config_error_line(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

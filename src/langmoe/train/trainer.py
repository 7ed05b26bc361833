"""The Accelerate-based trainer: one loop for 1 CPU, DDP, FSDP or DeepSpeed (`accelerate launch` / `torchrun`).

Data comes from a `BatchSource` that is a pure function of (step, micro, rank, world), so resuming from a
checkpoint replays exactly the same batches; the checkpoint restores model, optimizer, LR schedule and RNG states,
so an interrupted run continues bit-for-bit like an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from pydantic import Field, field_validator, model_validator

from langmoe.errors import LangmoeError
from langmoe.io import disk_error_message, fix_tree_modes, is_disk_error, read_json, write_json, write_text
from langmoe.optional import available, warn_missing_once
from langmoe.precision import apply_to_config, prepare_model
from langmoe.train.distributed import check_launch, no_accelerator
from langmoe.train.optim import OptimSettings
from langmoe.train.schedule import continued_warmup_cosine_scheduler
from langmoe.validation import validate

__all__ = [
    "LossTerm",
    "TrainConfig",
    "TrainResult",
    "find_checkpoints",
    "verify_checkpoint",
    "is_no_decay",
    "optimizer_state_by_name",
    "param_groups",
    "train",
]

_STATE_FILE = "trainer_state.json"  # written last inside the temp dir: a checkpoint without it is incomplete
_SCHED_FILE = "langmoe_scheduler.pt"
_MANIFEST = "manifest.json"  # sha256 of every file, written last: resume verifies it
_CKPT_RE = re.compile(r"^step-(\d+)$")
_RESERVED = {"step", "loss", "clm", "lr", "grad_norm", "tokens", "tokens_per_s"}
# Fields that may change between an interrupted run and its resume without changing the result.
_RESUME_FREE = {"progress", "log_every", "eval_every", "save_every", "keep_checkpoints", "gradient_checkpointing"}


class BatchSource(Protocol):
    """Per-rank micro-batches as a pure function of the optimizer step (see `langmoe.data.samplers`)."""

    def get(self, step: int, micro: int, rank: int = 0, world: int = 1) -> dict[str, Any]: ...


class TrainConfig(OptimSettings):
    """Optimisation and bookkeeping settings. Batch size per optimizer step = micro × accum × world size.

    The optimiser fields and their defaults come from `langmoe.train.optim.OptimSettings` (one set of defaults)."""

    steps: int = Field(gt=0, description="optimizer steps in total (including those before a resume)")
    adam_betas: tuple[float, float] = (0.9, 0.95)
    adam_eps: float = Field(1e-8, gt=0)
    micro_batch_size: int = Field(
        8, gt=0, description="rows per micro-batch per rank (checked on the batches)"
    )
    grad_accum: int = Field(1, gt=0)
    log_every: int = Field(10, ge=0, description="0: log only the last step")
    eval_every: int = Field(0, ge=0, description="0: evaluate only after the last step (if eval_fn is given)")
    save_every: int = Field(0, ge=0, description="0: no checkpoints; else every N steps and at the end")
    keep_checkpoints: int = Field(2, ge=1)
    seed: int = 0
    progress: bool = Field(True, description="rich progress bar (shown only on a TTY, rank 0)")
    compile: bool = Field(False, description="run the forward through torch.compile (inductor); costs seconds to "
                          "minutes once, 1.13-1.18x tokens/s on CPU for the tiny presets "
                          "(benchmarks/results/pretrain_throughput.md)")
    gradient_checkpointing: bool = Field(False, description="recompute each decoder layer's activations in backward "
                                         "(non-reentrant): activation memory of one layer instead of all, ~30% "
                                         "more compute, the same result")
    attn_implementation: Literal["sdpa", "eager"] | None = Field(
        None, description="attention kernel while training; None keeps the model's (transformers' default: SDPA)")
    # One LR schedule over several `train` calls (e.g. DMoE stage 1 then stage 2): local step s runs at global step
    # `schedule_offset + s` of a warmup-cosine over `schedule_total` steps (None: this call's `steps`, offset 0).
    schedule_offset: int = Field(0, ge=0, description="global step of this call's first step (continued schedule)")
    schedule_total: int | None = Field(None, gt=0, description="steps of the whole schedule; None: `steps`")

    @field_validator("adam_betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError("adam_betas must both be in [0, 1)")
        return v

    @model_validator(mode="after")
    def _schedule_span(self) -> TrainConfig:
        total = self.schedule_total if self.schedule_total is not None else self.steps
        if self.schedule_offset + self.steps > total:
            raise ValueError(f"schedule_offset {self.schedule_offset} + steps {self.steps} exceeds "
                             f"schedule_total {total}")
        return self

    @classmethod
    def parse(cls, data: dict[str, Any] | TrainConfig) -> TrainConfig:
        """Validate user input; a bad field raises LangmoeError naming it (one line)."""
        return validate(cls, data, "train config", default_loc="train config")


@dataclass(frozen=True)
class LossTerm:
    """An extra loss: total = CLM + Σ weight · fn(model, batch, outputs). `model` is the unwrapped model."""

    name: str
    weight: float
    fn: Callable[[torch.nn.Module, dict[str, Any], Any], torch.Tensor]

    def __post_init__(self) -> None:
        if not self.name or not re.fullmatch(r"[A-Za-z0-9_./-]+", self.name) or self.name in _RESERVED:
            raise LangmoeError(
                f"loss term name {self.name!r} must be [A-Za-z0-9_./-]+ and not one of {sorted(_RESERVED)}"
            )
        if not math.isfinite(float(self.weight)):
            raise LangmoeError(f"loss term {self.name!r}: weight must be finite, got {self.weight}")
        if not callable(self.fn):
            raise LangmoeError(f"loss term {self.name!r}: fn must be callable")


@dataclass
class TrainResult:
    """What one `train` call did. `losses` holds the total loss of each step run in this call (global mean)."""

    final_step: int
    start_step: int
    losses: list[float] = field(default_factory=list)
    tokens_seen: int = 0  # cumulative over all ranks, including steps before a resume
    tokens_per_s: float = 0.0  # throughput of this call (all ranks)
    elapsed_s: float = 0.0
    eval: dict[str, float] = field(default_factory=dict)  # the last evaluation
    out_dir: Path | None = None
    # Set when the model was sharded (FSDP): the full trained weights, gathered on the main process (empty on the
    # others). The model object itself then still holds shards: save/evaluate a plain copy loaded with these
    # (`langmoe.train.distributed.gathered_model`).
    state_dict: dict[str, torch.Tensor] | None = None
    # AdamW state by parameter name after the last step (only with `train(..., return_optimizer_state=True)`)
    optimizer_state: dict[str, dict[str, torch.Tensor]] | None = None


# ---------------------------------------------------------------------------------------------------------------
# parameters


def is_no_decay(name: str, param: torch.Tensor) -> bool:
    """Norm weights, biases and any 1-D parameter get no weight decay (decaying them only hurts)."""
    return param.ndim < 2 or name.endswith("bias") or "norm" in name.lower()


def param_groups(
    model: torch.nn.Module,
    weight_decay: float,
    trainable: Callable[[str, torch.nn.Parameter], bool] | None = None,
) -> list[dict[str, Any]]:
    """AdamW groups: [decayed, not decayed], frozen parameters left out.

    With `trainable`, parameters it rejects get `requires_grad=False` (so they get no gradient and no optimizer
    state); without it the current `requires_grad` flags are respected. Each group carries `names` for inspection.
    """
    if trainable is not None:
        for name, p in model.named_parameters():
            p.requires_grad_(bool(trainable(name, p)))
    decay: dict[str, torch.nn.Parameter] = {}
    no_decay: dict[str, torch.nn.Parameter] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if is_no_decay(name, p) else decay)[name] = p
    if not decay and not no_decay:
        raise LangmoeError("no trainable parameters: the `trainable` selector rejected every parameter")
    groups = []
    if decay:
        groups.append({"params": list(decay.values()), "weight_decay": weight_decay, "names": list(decay)})
    if no_decay:
        groups.append({"params": list(no_decay.values()), "weight_decay": 0.0, "names": list(no_decay)})
    return groups


# ---------------------------------------------------------------------------------------------------------------
# checkpoints


def find_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `out_dir/checkpoints`, oldest first. Incomplete ones are skipped with a warning.

    Complete means renamed into place (`step-N`, with its trainer state); whether the files are intact is checked
    against the manifest when resuming (`verify_checkpoint`).
    """
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        m = _CKPT_RE.match(d.name)
        if not m or not d.is_dir():
            continue
        if not (d / _STATE_FILE).is_file():
            warnings.warn(f"skipping incomplete checkpoint {d} (no {_STATE_FILE})", stacklevel=2)
            continue
        found.append((int(m.group(1)), d))
    return sorted(found)


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_manifest(folder: Path) -> None:
    """sha256 and size of every file of a finished checkpoint, written last (its presence = all files written)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != _MANIFEST)
    write_json(folder / _MANIFEST, {
        "format": 1,
        "files": {str(p.relative_to(folder)): {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in files},
    })


def verify_checkpoint(folder: str | Path) -> str | None:
    """None when every file of the checkpoint matches its manifest, else what is wrong (one phrase).

    Checkpoints written before manifests existed (trainer state format 1) cannot be verified and pass.
    """
    folder = Path(folder)
    man = folder / _MANIFEST
    if not man.is_file():
        try:
            legacy = int(read_json(folder / _STATE_FILE).get("format", 1)) < 2
        except Exception:  # noqa: BLE001 - damaged state file
            return f"{_STATE_FILE} is unreadable and there is no {_MANIFEST}"
        return None if legacy else f"{_MANIFEST} is missing"
    try:
        files = read_json(man)["files"]
        entries = {str(k): (str(v["sha256"]), int(v["bytes"])) for k, v in files.items()}
    except Exception:  # noqa: BLE001 - damaged manifest
        return f"{_MANIFEST} is unreadable"
    if _STATE_FILE not in entries:
        return f"{_MANIFEST} does not list {_STATE_FILE}"
    for rel, (digest, size) in sorted(entries.items()):
        f = folder / rel
        if not f.is_file():
            return f"{rel} is missing"
        if f.stat().st_size != size:
            return f"{rel} has {f.stat().st_size} bytes, the manifest says {size}"
        if _sha256(f) != digest:
            return f"{rel} does not match its sha256 in {_MANIFEST}"
    return None


def _save_checkpoint(acc, out_dir: Path, step: int, scheduler, config: TrainConfig, tokens_seen: int) -> None:
    """All ranks write into `.tmp-step-N`; rank 0 adds the trainer state and the manifest (last), then renames it
    to `step-N`. A failed write (disk full, ...) removes the temp folder and says so in one line."""

    root = out_dir / "checkpoints"
    tmp, final = root / f".tmp-step-{step}", root / f"step-{step}"
    try:
        if acc.is_main_process:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            torch.save(scheduler.state_dict(), tmp / _SCHED_FILE)
            write_json(
                tmp / _STATE_FILE,
                {"format": 2, "step": step, "tokens_seen": tokens_seen, "config": config.model_dump(mode="json")},
            )
            _write_manifest(tmp)
            fix_tree_modes(tmp)  # accelerate writes some files 0600: follow the umask like every other output
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for _, old in find_checkpoints(out_dir)[: -config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
    except Exception as e:
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_error(e):
            raise LangmoeError(disk_error_message(e, f"checkpoint {final}")) from None
        raise
    acc.wait_for_everyone()


def _load_scheduler(scheduler, path: Path) -> None:
    """Restore the scheduler's position (step, last LR) but keep the schedule this call was configured with: a
    resumed run whose `steps` changed anneals to its new end instead of the checkpoint's old one (the trainer warns
    that it will not match an uninterrupted run). With unchanged settings both hold the same values."""
    current = [dict(vars(f)) for f in scheduler.lr_lambdas]
    scheduler.load_state_dict(torch.load(path, weights_only=True))
    for f, d in zip(scheduler.lr_lambdas, current, strict=True):
        vars(f).update(d)


def _load_checkpoint(acc, path: Path, scheduler, config: TrainConfig) -> tuple[int, int]:
    """Restore the newest intact checkpoint at or before `path`: a damaged one (files that do not match the
    manifest, or that fail to load) is skipped with a warning in favour of the one before; none intact is an
    error."""
    path = Path(path)
    m = _CKPT_RE.match(path.name)
    newest = int(m.group(1)) if m else None
    candidates = [p for s, p in reversed(find_checkpoints(path.parent.parent)) if newest is None or s <= newest]
    if path not in candidates:
        candidates.insert(0, path)
    first_problem = None
    for i, cand in enumerate(candidates):
        problem = verify_checkpoint(cand)
        if problem is None:
            try:
                state = read_json(cand / _STATE_FILE)
                step, tokens = int(state["step"]), int(state["tokens_seen"])
                acc.load_state(str(cand))
                _load_scheduler(scheduler, cand / _SCHED_FILE)
            except Exception as e:  # noqa: BLE001 - any failure means the folder is unusable
                msg = " ".join(str(e).split())[:150]
                problem = f"{type(e).__name__}: {msg}"
        if problem is None:
            break
        first_problem = first_problem or (cand, problem)
        if i + 1 < len(candidates):
            warnings.warn(f"checkpoint {cand} is corrupt ({problem}): resuming from the older "
                          f"{candidates[i + 1].name} instead", stacklevel=3)
    else:
        bad, problem = first_problem
        older = "" if len(candidates) < 2 else " and no older checkpoint is intact"
        raise LangmoeError(f"checkpoint {bad} is corrupt ({problem}){older}; delete it to resume from an older one "
                           "(or delete the checkpoints folder to start over)")
    saved = state.get("config", {})
    changed = sorted(
        k for k, v in config.model_dump(mode="json").items() if k not in _RESUME_FREE and saved.get(k) != v
    )
    if changed:
        warnings.warn(
            f"resuming from {cand} with changed settings {changed}: the run will not match an "
            "uninterrupted one",
            stacklevel=3,
        )
    return step, tokens


# ---------------------------------------------------------------------------------------------------------------
# logging


class _Logger:
    """JSONL + TensorBoard + rich progress, active on the main process only."""

    def __init__(self, out_dir: Path, active: bool, start_step: int, total: int, show_progress: bool):
        self.active = active
        self.path = out_dir / "log.jsonl"
        self._file = None
        self._tb = None
        self._progress = None
        if not active:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        kept = ""
        if start_step > 0 and self.path.exists():  # drop rows logged after the checkpoint we resume from
            rows = [ln for ln in self.path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            kept = "".join(ln + "\n" for ln in rows if _row_step(ln) <= start_step)
        write_text(self.path, kept)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

        if available("tensorboard"):
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(out_dir / "tb"), purge_step=start_step + 1 if start_step else None)
        else:  # JSONL logs need nothing; TensorBoard is an extra
            warn_missing_once("tensorboard", "TensorBoard logging")
        if show_progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                TimeRemainingColumn(),
            )
            self._task = self._progress.add_task("", total=total, completed=start_step)
            self._progress.start()

    def row(self, row: dict[str, Any]) -> None:
        if not self.active:
            return
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        step = row["step"]
        for k, v in row.items():
            if self._tb is not None and k != "step" and isinstance(v, (int, float)) and v is not None:
                self._tb.add_scalar(k if "/" in k else f"train/{k}", v, step)
        if self._progress is not None and "loss" in row:
            self._progress.update(
                self._task, description=f"loss {row['loss']:.4f}  {row['tokens_per_s']:,.0f} tok/s"
            )

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self._tb is not None:
            self._tb.close()
        if self._file is not None:
            self._file.close()


def _row_step(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except Exception:  # noqa: BLE001 - a torn last line from a kill is dropped
        return 1 << 62


# ---------------------------------------------------------------------------------------------------------------
# the loop


def _make_accelerator(config: TrainConfig):
    """The Accelerator for `train`: `cpu=True` when no GPU exists, so `torchrun` / `accelerate launch` on a
    CPU-only machine give gloo DDP (without it Accelerate falls back to N unsynchronised single processes)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState


    check_launch()
    if no_accelerator():
        from langmoe.train.distributed import allow_fsdp_on_cpu

        allow_fsdp_on_cpu()
    kwargs = {"mixed_precision": config.mixed_precision, "gradient_accumulation_steps": config.grad_accum,
              "cpu": no_accelerator()}
    try:
        return Accelerator(**kwargs)
    except ValueError as e:
        # A single process that trained before with another precision: the global state may be reset safely.
        if "already been initialized" in str(e) and AcceleratorState().num_processes == 1:
            AcceleratorState._reset_state()
            return Accelerator(**kwargs)
        raise LangmoeError(f"cannot set up Accelerate: {str(e).splitlines()[0]}") from e


def _gather_if_sharded(acc, prepared) -> dict[str, torch.Tensor] | None:
    """Full weights on the main process when FSDP or DeepSpeed ZeRO-3 sharded the model (a collective: every rank
    must call it). ZeRO-3 needs `zero3_save_16bit_model: true` and gives 16-bit weights (untested here)."""
    from accelerate.utils import DistributedType

    if acc.distributed_type == DistributedType.DEEPSPEED:
        if acc.deepspeed_config.get("zero_optimization", {}).get("stage") != 3:
            return None
    elif acc.distributed_type != DistributedType.FSDP:
        return None
    state = acc.get_state_dict(prepared)
    return state if acc.is_main_process else {}


def _check_batch(batch: dict[str, Any], config: TrainConfig) -> None:
    for key in ("input_ids", "labels"):
        if key not in batch or not torch.is_tensor(batch[key]):
            raise LangmoeError(
                f"batch source must return a dict with tensor {key!r}; got keys {sorted(batch)}"
            )
    ids = batch["input_ids"]
    if ids.ndim != 2 or batch["labels"].shape != ids.shape:
        raise LangmoeError(
            f"input_ids and labels must both be [batch, seq]; got {tuple(ids.shape)} and "
            f"{tuple(batch['labels'].shape)}"
        )
    if ids.shape[0] != config.micro_batch_size:
        raise LangmoeError(
            f"batch source yields micro-batches of {ids.shape[0]} rows but micro_batch_size is "
            f"{config.micro_batch_size}; make them agree"
        )


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _is_every(done: int, every: int, total: int) -> bool:
    return done == total or (every > 0 and done % every == 0)


def _check_terms(loss_terms: Sequence[LossTerm]) -> tuple[LossTerm, ...]:
    terms = tuple(loss_terms)
    for t in terms:
        if not isinstance(t, LossTerm):
            raise LangmoeError(f"loss_terms must be LossTerm objects, got {type(t).__name__}")
    if len({t.name for t in terms}) != len(terms):
        raise LangmoeError(f"loss term names must be unique: {[t.name for t in terms]}")
    return terms


@dataclass
class _Session:
    """What one `train` call set up: the Accelerator, the prepared model, its optimizer and LR schedule."""

    config: TrainConfig
    terms: tuple[LossTerm, ...]
    acc: Any
    prepared: torch.nn.Module
    inner: torch.nn.Module  # the unwrapped model (loss terms and forward contexts see this one)
    forward: Callable[..., Any]  # `prepared`, or its torch.compile wrapper (same parameters)
    optimizer: Any
    scheduler: Any
    clip_params: list[torch.nn.Parameter]
    ctx_fn: Callable[[torch.nn.Module, dict[str, Any]], AbstractContextManager]
    use_cache: dict[str, bool]
    restore_model: Callable[[], None]  # undoes gradient checkpointing / the attention switch


@dataclass
class _Window:
    """Running totals between two log rows (and over the whole call)."""

    tokens_seen: int
    tokens_at_start: int
    t0: float = field(default_factory=time.perf_counter)
    window_t0: float = 0.0
    window_tokens: int = 0
    pending: list[torch.Tensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.window_t0 = self.t0

    def add(self, stats: torch.Tensor, tokens: int) -> None:
        self.tokens_seen += tokens
        self.window_tokens += tokens
        self.pending.append(stats)


def _check_accelerator(acc, config: TrainConfig, given: bool) -> None:
    from accelerate.utils import DistributedType

    if acc.distributed_type == DistributedType.DEEPSPEED:
        if acc.gradient_accumulation_steps != config.grad_accum:
            raise LangmoeError(
                f"DeepSpeed config has gradient_accumulation_steps={acc.gradient_accumulation_steps}"
                f" but grad_accum is {config.grad_accum}; make them agree"
            )
    else:
        acc.gradient_accumulation_steps = config.grad_accum
    if given and acc.mixed_precision != config.mixed_precision:
        raise LangmoeError(
            f"the given Accelerator uses mixed_precision={acc.mixed_precision!r} but the config says "
            f"{config.mixed_precision!r}; make them agree"
        )


def _setup(model, config: TrainConfig, terms, accelerator, trainable, init_optimizer_state,
           forward_context) -> _Session:
    """Accelerator, seed, AdamW over the trainable parameters, the LR schedule, `accelerate.prepare`."""
    from accelerate.utils import set_seed

    acc = accelerator if accelerator is not None else _make_accelerator(config)
    _check_accelerator(acc, config, accelerator is not None)
    set_seed(config.seed)
    groups = param_groups(model, config.weight_decay, trainable)
    optimizer = torch.optim.AdamW(
        [{k: v for k, v in g.items() if k != "names"} for g in groups],
        lr=config.lr,
        betas=config.adam_betas,
        eps=config.adam_eps,
    )
    # The scheduler is not handed to `prepare`: Accelerate's wrapper steps it once per process per call, which
    # would advance the schedule `world` times too fast. We step it exactly once per optimizer step.
    scheduler = continued_warmup_cosine_scheduler(
        optimizer, config.schedule_total or config.steps, config.warmup_ratio, config.min_lr_ratio,
        config.schedule_offset,
    )
    if init_optimizer_state:
        _seed_optimizer_state(acc, model, optimizer, init_optimizer_state)
    restore_model = prepare_model(model, config.gradient_checkpointing, config.attn_implementation)
    prepared, optimizer = acc.prepare(model, optimizer)
    inner = acc.unwrap_model(prepared)
    use_cache = {"use_cache": False} if hasattr(getattr(inner, "config", None), "use_cache") else {}
    # the compiled wrapper shares the prepared model's parameters: optimizer, clipping and checkpoints use `prepared`
    forward = torch.compile(prepared) if config.compile else prepared
    return _Session(
        config, terms, acc, prepared, inner, forward, optimizer, scheduler,
        # All parameters (frozen ones have no grad and are ignored): Accelerate then uses FSDP's own clipping.
        clip_params=list(prepared.parameters()),
        ctx_fn=forward_context or (lambda _m, _b: nullcontext()), use_cache=use_cache, restore_model=restore_model,
    )


def _resume(s: _Session, out_dir: Path) -> tuple[int, int]:
    """(step, tokens seen) of the newest intact checkpoint, restored into the session; (0, 0) without one."""
    if s.acc.is_main_process and (out_dir / "checkpoints").is_dir():
        for stale in (out_dir / "checkpoints").glob(".tmp-step-*"):
            shutil.rmtree(stale, ignore_errors=True)
    ckpts = find_checkpoints(out_dir)
    if not ckpts:
        return 0, 0
    return _load_checkpoint(s.acc, ckpts[-1][1], s.scheduler, s.config)


def _loss(s: _Session, batch: dict[str, Any]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Total loss of one micro-batch (CLM + weighted terms) and its unweighted parts, under autocast."""
    with s.acc.autocast(), s.ctx_fn(s.inner, batch):
        outputs = s.forward(input_ids=batch["input_ids"], labels=batch["labels"], **s.use_cache)
        clm = outputs.loss
        if clm is None:
            raise LangmoeError("the model returned no loss for `labels`; use a causal LM head model")
        total = clm
        parts = [clm.detach().float()]
        for t in s.terms:
            value = t.fn(s.inner, batch, outputs)
            if not torch.is_tensor(value) or value.ndim != 0:
                raise LangmoeError(f"loss term {t.name!r} must return a scalar tensor")
            total = total + t.weight * value
            parts.append(value.detach().float())
    return total, parts


def _accumulate(s: _Session, source: BatchSource, step: int, check: bool) -> tuple[torch.Tensor, int]:
    """Forward and backward over the step's micro-batches: summed [total, clm, terms...] and this rank's tokens."""
    acc, config = s.acc, s.config
    stats = torch.zeros(2 + len(s.terms), device=acc.device)
    local_tokens = 0
    for micro in range(config.grad_accum):
        batch = source.get(step, micro, acc.process_index, acc.num_processes)
        if check and micro == 0:
            _check_batch(batch, config)
        local_tokens += batch["input_ids"].numel()
        batch = _to_device(batch, acc.device)
        with acc.accumulate(s.prepared):
            total, parts = _loss(s, batch)
            acc.backward(total)  # divides by grad_accum (except DeepSpeed, which scales itself)
        stats += torch.stack([total.detach().float(), *parts])
    if not acc.sync_gradients:
        raise LangmoeError("gradient accumulation went out of step; pass a fresh Accelerator to train()")
    return stats, local_tokens


def _optimizer_step(s: _Session, need_norm: bool) -> tuple[float, torch.Tensor | None]:
    """Clip (or only measure, for the log), step optimizer and schedule; the LR used and the grad norm."""
    grad_norm = None
    if s.config.grad_clip > 0:
        grad_norm = s.acc.clip_grad_norm_(s.clip_params, s.config.grad_clip)
    elif need_norm:
        grad_norm = s.acc.clip_grad_norm_(s.clip_params, float("inf"))
    lr = s.scheduler.get_last_lr()[0]
    s.optimizer.step()
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    return lr, grad_norm


def _evaluate(s: _Session, eval_fn: Callable[[torch.nn.Module], dict[str, float]]) -> dict[str, float]:
    s.prepared.eval()
    metrics = eval_fn(s.inner)
    s.prepared.train()
    if not isinstance(metrics, dict):
        raise LangmoeError(f"eval_fn must return dict[str, float], got {type(metrics).__name__}")
    return {str(k): float(v) for k, v in metrics.items()}


def _log_window(s: _Session, log: _Logger, w: _Window, result: TrainResult, done: int, lr: float,
                grad_norm: torch.Tensor | None, with_eval: bool) -> None:
    """One log row: the mean of the steps since the last row (over all ranks), LR, norm, throughput, eval."""
    hist = torch.stack(w.pending)
    if s.acc.num_processes > 1:
        hist = s.acc.reduce(hist, reduction="mean")
    rows = hist.tolist()
    w.pending.clear()
    result.losses.extend(r[0] for r in rows)
    now = time.perf_counter()
    mean = [sum(col) / len(rows) for col in zip(*rows, strict=True)]
    row: dict[str, Any] = {"step": done, "loss": mean[0], "clm": mean[1]}
    row.update({t.name: mean[2 + i] for i, t in enumerate(s.terms)})
    row.update({"lr": lr, "grad_norm": None if grad_norm is None else float(grad_norm), "tokens": w.tokens_seen,
                "tokens_per_s": w.window_tokens / max(now - w.window_t0, 1e-9)})
    if with_eval:
        row.update({f"eval/{k}": v for k, v in result.eval.items()})
    log.row(row)
    w.window_t0, w.window_tokens = now, 0
    if not all(math.isfinite(r[0]) for r in rows):
        raise LangmoeError(f"loss is not finite at step {done}; lower lr or check the data")


def _release(s: _Session) -> None:
    """Give the caller back a plain model: no autocast wrapper from `prepare` (bf16), no checkpointing."""
    s.acc.unwrap_model(s.prepared, keep_fp32_wrapper=False)
    s.restore_model()


def _finish(s: _Session, result: TrainResult, return_optimizer_state: bool) -> TrainResult:
    result.state_dict = _gather_if_sharded(s.acc, s.prepared)
    if return_optimizer_state:
        result.optimizer_state = optimizer_state_by_name(s.inner, s.optimizer)
    return result


def train(
    model: torch.nn.Module,
    source: BatchSource,
    config: TrainConfig | dict[str, Any],
    out_dir: str | Path,
    loss_terms: Sequence[LossTerm] = (),
    forward_context: Callable[[torch.nn.Module, dict[str, Any]], AbstractContextManager] | None = None,
    eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    trainable: Callable[[str, torch.nn.Parameter], bool] | None = None,
    accelerator: Any = None,
    init_optimizer_state: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    return_optimizer_state: bool = False,
) -> TrainResult:
    """Train `model` (a Hugging Face causal LM) in place for `config.steps` optimizer steps.

    Resumes automatically from the newest complete checkpoint in `out_dir/checkpoints`. Only `input_ids` and
    `labels` reach the model; the whole batch (with `lang_ids`, `group_ids`) goes to loss terms and to
    `forward_context(model, batch)`, which wraps every forward (e.g. hard routing by group). Pass `accelerator`
    to reuse a configured `accelerate.Accelerator` (one per `train` call: it registers model and optimizer).
    The active command's precision settings (`langmoe.precision`) override the config's.

    Hand-off between calls (one optimiser across stages): `init_optimizer_state` (AdamW state by parameter name,
    e.g. the previous call's `TrainResult.optimizer_state`) seeds the moments of the parameters it names when the
    run starts fresh (a checkpoint, when there is one, wins); other parameters start with fresh state.
    """
    config = apply_to_config(TrainConfig.parse(config))
    out_dir = Path(out_dir)
    s = _setup(model, config, _check_terms(loss_terms), accelerator, trainable, init_optimizer_state,
               forward_context)
    start_step, tokens_seen = _resume(s, out_dir)
    result = TrainResult(final_step=start_step, start_step=start_step, tokens_seen=tokens_seen, out_dir=out_dir)
    if start_step >= config.steps:
        if start_step > config.steps:
            warnings.warn(f"checkpoint step {start_step} is past steps={config.steps}; nothing to do", stacklevel=2)
        _release(s)
        return _finish(s, result, return_optimizer_state)

    log = _Logger(out_dir, s.acc.is_main_process, start_step, config.steps, config.progress and sys.stdout.isatty())
    s.acc.step = 0  # Accelerate's accumulation counter: align it with our optimizer steps
    s.prepared.train()
    w = _Window(tokens_seen=tokens_seen, tokens_at_start=tokens_seen)
    try:
        for step in range(start_step, config.steps):
            done = step + 1
            do_eval = eval_fn is not None and _is_every(done, config.eval_every, config.steps)
            do_log = do_eval or _is_every(done, config.log_every, config.steps)
            stats, local_tokens = _accumulate(s, source, step, check=step == start_step)
            lr, grad_norm = _optimizer_step(s, need_norm=do_log)
            w.add(stats / config.grad_accum, local_tokens * s.acc.num_processes)
            if do_eval:
                result.eval = _evaluate(s, eval_fn)
            if do_log:
                _log_window(s, log, w, result, done, lr, grad_norm, with_eval=do_eval)
            log.advance()
            result.final_step = done
            if config.save_every > 0 and _is_every(done, config.save_every, config.steps):
                _save_checkpoint(s.acc, out_dir, done, s.scheduler, config, w.tokens_seen)
    finally:
        log.close()
        _release(s)
    result.elapsed_s = time.perf_counter() - w.t0
    result.tokens_seen = w.tokens_seen
    result.tokens_per_s = (w.tokens_seen - w.tokens_at_start) / max(result.elapsed_s, 1e-9)
    return _finish(s, result, return_optimizer_state)


# ---------------------------------------------------------------------------------------------------------------
# optimiser hand-off between train calls


def optimizer_state_by_name(model: torch.nn.Module, optimizer) -> dict[str, dict[str, torch.Tensor]]:
    """AdamW state (`step`, `exp_avg`, `exp_avg_sq`) keyed by parameter name, detached copies on CPU."""
    opt = getattr(optimizer, "optimizer", optimizer)  # Accelerate's wrapper
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, p in model.named_parameters():
        st = opt.state.get(p)
        if st:
            out[name] = {k: (v.detach().to("cpu", copy=True) if torch.is_tensor(v) else v) for k, v in st.items()}
    return out


def _seed_optimizer_state(acc, model, optimizer, state: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
    """Copy the named state into `optimizer` for parameters that exist with the same shape (others start fresh)."""
    from accelerate.utils import DistributedType

    if acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise LangmoeError(
            "carrying optimizer state between stages needs an unsharded run (1 process or DDP); "
            "use schedule: restart with FSDP/DeepSpeed"
        )
    for name, p in model.named_parameters():
        st = state.get(name)
        if not p.requires_grad or not st or st.get("exp_avg") is None or st["exp_avg"].shape != p.shape:
            continue
        optimizer.state[p] = {
            k: (v.detach().to(p.device if k != "step" else v.device, copy=True) if torch.is_tensor(v) else v)
            for k, v in st.items()
        }

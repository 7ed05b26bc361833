"""DMoE step A: parameter deviation of each language (docs/methods.md §1 A, docs/dmoe-analysis.md).

For each language x the probe (`langmoe.methods.dmoe.probe`) starts from the base θ and, by its `kind`, takes the
mean gradient over its tokens (`gradient`), plain SGD steps (`sgd`) or the paper's fresh-AdamW steps (`adamw`),
then records per decoder layer `dev_ffn[x][l] = ||θ_x^FFN,l − θ^FFN,l||_F` over the FFN weight matrices (every
≥2-D parameter of the layer's MLP: gate/up/down, c_fc/c_proj, ...; biases and norms excluded; for `gradient` the
delta is −mean gradient), and the same over attention when asked (`dev_attn`, for plots). The language vector is
the concatenated FFN delta of the last N layers: exact, or a sketch (`langmoe.methods.dmoe.sketch`) when asked or
when it is longer than `sketch_above` numbers. Similarity = cosine of the vectors, optionally after subtracting
their mean over the probed languages (`center`). Between languages the trained weights are restored in place
from one compact copy, so memory is one model, the trained weights' gradients and that copy.

With `out_dir`, each finished language is cached (`probe/<lang>.json` + `probe/<lang>.vec.pt`) under a key of
(config, model weights, that language's data): a killed probe resumes without redoing finished languages.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from langmoe.console import progress
from langmoe.data.packing import PackedBlocks, check_block_len, pack_corpus
from langmoe.data.samplers import TemperatureSampler
from langmoe.errors import LangmoeError
from langmoe.io import read_json, write_json, write_with
from langmoe.methods.dmoe.probe import (
    BaseCopy,
    ProbeSettings,
    ProbeTarget,
    checkpointing,
    delta_fn,
    layer_params,
    make_base_copy,
    measure,
    only_trained,
    probe_target,
    run_probe,
    use_checkpointing,
)
from langmoe.methods.dmoe.sketch import SketchMethod, cosine_matrix, make_sketcher
from langmoe.validation import error_line, validate

__all__ = ["DeviationConfig", "DeviationResult", "LanguageDeviation", "ProbeInfo", "ProbeStability",
           "compare_probes", "layer_params", "layer_spread", "measure_deviation", "measure_deviation_on_corpus",
           "similarity_matrix"]

CACHE_VERSION = 1
FLAT_RATIO = 1.1  # max/min of the mean per-layer deviation below this: epsilon picks layers by noise
ProbeKind = Literal["gradient", "sgd", "adamw"]
# The default probe: the cheapest setting that gave the same groups over three seeds on both the European and the
# distant language set of benchmarks/results/probe_signal.md (4 SGD steps of 16,384 tokens, centred cosines).
DEFAULT_KIND: ProbeKind = "sgd"
DEFAULT_STEPS, DEFAULT_GRAD_ACCUM = 4, 16
# LR of the update kinds when none is given. adamw: the shipped recipes' 3e-4 on the tiny bases (paper 8e-6 at
# ~1M tokens a step); sgd: 0.3, the largest of 0.03 / 0.1 / 0.3 / 1.0 that lowers held-out loss on the shipped
# base (1.0 raises it; benchmarks/results/probe_signal.md). The gradient probe takes no step and has no LR.
DEFAULT_LR = {"adamw": 3e-4, "sgd": 0.3}
AUTO_SKETCH_ABOVE = 1 << 24  # numbers in a language vector above which it is sketched unless asked otherwise
AUTO_SKETCH_DIM = 1 << 16  # count-sketch buckets of an automatic sketch: cosine error ~ 1/256
# What the probe did before these options existed; a key leaves a field out while it has this value, so runs
# that pin the old probe keep their cache keys.
LEGACY_PROBE: dict[str, Any] = {"kind": "adamw", "params": "all", "center": False}
NEW_FIELDS_AT_OLD_VALUE: dict[str, Any] = {"optimizer_state": "float32"}  # dropped from keys too
# The paper's probe as langmoe ran it before the kinds (pin it to reproduce results recorded with it).
PAPER_PROBE: dict[str, Any] = {**LEGACY_PROBE, "include_attention": True}


class DeviationConfig(BaseModel):
    """Settings of the per-language probe. Defaults suit the built-in tiny setting (docs/dmoe-analysis.md); the
    paper's probe is `kind="adamw", params="all"`, 10 steps at LR 8e-6 of 2048 × 512-token sequences."""

    model_config = ConfigDict(extra="forbid")

    kind: ProbeKind = Field(DEFAULT_KIND, description="sgd: plain SGD steps; gradient: mean gradient at the base, "
                            "no update; adamw: the paper's fresh-AdamW steps")
    steps: int = Field(DEFAULT_STEPS, gt=0, description="S: probe steps per language (gradient: steps of grad_accum "
                                             "micro-batches averaged into one gradient)")
    lr: float | None = Field(None, gt=0, description="constant LR of sgd/adamw (None: DEFAULT_LR of the kind; "
                             "paper 8e-6 at ~1M tokens per step); the gradient probe has none")
    micro_batch_size: int = Field(8, gt=0, description="sequences per micro-batch")
    grad_accum: int = Field(DEFAULT_GRAD_ACCUM, gt=0, description="micro-batches per probe step (tokens per "
                            "step = micro_batch_size × grad_accum × block_len)")
    stability: bool = Field(True, description="probe a second time with seed + 1 and report how well the two "
                                              "similarity matrices and layer profiles agree (doubles the cost)")
    block_len: int = Field(128, ge=2, description="tokens per sequence when the probe packs a corpus itself")
    max_tokens_per_lang: int | None = Field(
        200_000, gt=0, description="packing cap per language when the probe packs a corpus itself (3x what "
        "the default probe reads, so its blocks are not repeated)"
    )
    last_n_layers: int | None = Field(3, gt=0, description="layers whose FFN deltas form the language vector "
                                                           "(None: all layers)")
    include_attention: bool = Field(False, description="also train and measure attention (plots only)")
    params: Literal["measured", "all"] = Field(
        "measured", description="measured: only the measured weights train (the FFN matrices, attention with "
        "include_attention); all: every trainable parameter (the paper's full fine-tune)")
    center: bool = Field(True, description="cosines of the unit-length vectors minus their mean over the probed "
                                           "languages (a direction common to all says nothing about which are "
                                           "alike); the paper: raw cosines")
    sketch_dim: int | None = Field(None, gt=0, description="sketch the language vector to this dimension (None: "
                                                           "exact up to sketch_above numbers, else 65,536)")
    sketch_method: SketchMethod = Field("count", description="count (d additions) or gaussian (d × k)")
    sketch_above: int | None = Field(AUTO_SKETCH_ABOVE, gt=0, description="vectors longer than this are "
                                     "sketched even without sketch_dim (None: never)")
    weight_decay: float = Field(0.0, ge=0, description="0: the delta is the data's doing, not the decay's")
    grad_clip: float = Field(1.0, ge=0)
    mixed_precision: Literal["no", "bf16"] = "no"
    optimizer_state: Literal["float32", "bfloat16"] = Field(
        "float32", description="adamw's two moments in float32 (torch's AdamW) or bfloat16 (half the state)")
    base_copy: Literal["auto", "memory", "disk"] = Field(
        "auto", description="where sgd/adamw keep the weights they restore: memory, a file (read back a tensor at "
        "a time), or auto (a file above 256 MiB of trained weights)")
    checkpointing: Literal["auto", "on", "off"] = Field(
        "auto", description="recompute each decoder layer's activations in backward (same results, less memory, "
        "more compute); auto: on when the probe keeps every trained weight's gradient (several micro-batches a "
        "step, or the gradient and adamw kinds) and those weights exceed 256 MiB")
    seed: int = Field(0, ge=0, description="data order, dropout and sketch seed (the same for every language)")
    progress: bool = Field(True, description="a progress bar over languages and steps (on a terminal only)")

    @model_validator(mode="after")
    def _kind_lr(self) -> DeviationConfig:
        if self.lr is None and self.kind != "gradient":
            self.lr = DEFAULT_LR[self.kind]
        if self.optimizer_state != "float32" and self.kind != "adamw":
            raise ValueError(f"optimizer_state applies to the adamw probe; the {self.kind} probe keeps no state")
        return self

    @classmethod
    def parse(cls, data: Mapping[str, Any] | DeviationConfig | None = None) -> DeviationConfig:
        if isinstance(data, cls):
            return data
        return validate(cls, dict(data or {}), "deviation config", default_loc="deviation config")

    def settings(self) -> ProbeSettings:
        return ProbeSettings(kind=self.kind, steps=self.steps, grad_accum=self.grad_accum,
                             micro_batch_size=self.micro_batch_size, lr=self.lr or 0.0,
                             weight_decay=self.weight_decay, grad_clip=self.grad_clip,
                             mixed_precision=self.mixed_precision, seed=self.seed,
                             optimizer_state=self.optimizer_state)

    def sketch_of(self, length: int) -> tuple[str, int] | None:
        """(method, dimension) of the sketch a vector of `length` numbers gets, or None (exact)."""
        if self.sketch_dim is not None:
            return self.sketch_method, self.sketch_dim
        if self.sketch_above is not None and length > self.sketch_above:
            return self.sketch_method, AUTO_SKETCH_DIM
        return None

    def key_fields(self, vector_length: int) -> dict[str, Any]:
        """What decides a language's probe result (progress and unused sketch fields left out; the new fields
        left out while at their old behaviour, so old caches stay valid)."""
        out = self.model_dump(mode="json", exclude={"progress", "sketch_method", "sketch_above", "base_copy",
                                                       "checkpointing"})
        for k, v in {**LEGACY_PROBE, **NEW_FIELDS_AT_OLD_VALUE}.items():
            if out.get(k) == v:
                out.pop(k)
        if (sk := self.sketch_of(vector_length)) is not None:
            out["sketch"] = list(sk)
        return out


class ProbeInfo(BaseModel):
    steps: int
    tokens_seen: int
    first_loss: float | None
    last_loss: float | None
    elapsed_s: float
    cached: bool = False


class LanguageDeviation(BaseModel):
    """One language's probe result (the per-language cache record)."""

    lang: str
    key: str
    dev_ffn: list[float]
    dev_attn: list[float] | None
    probe: ProbeInfo


class ProbeStability(BaseModel):
    """Agreement of two probes that differ only in the data order (seed): is the probe larger than its noise?"""

    seeds: list[int]
    similarity_corr: float = Field(description="Pearson correlation of the off-diagonal similarities")
    layer_corr: float | None = Field(description="Pearson correlation of the per-layer mean FFN deviations")
    similarity: list[list[float]] = Field(description="the second probe's similarity matrix")


class DeviationResult(BaseModel):
    """Everything step A produces. `deviation.json` holds it; vectors live beside it (`save_vectors`)."""

    langs: list[str]
    num_layers: int
    dev_ffn: dict[str, list[float]] = Field(description="lang -> FFN deviation per decoder layer")
    dev_attn: dict[str, list[float]] | None = Field(None, description="lang -> attention deviation per layer")
    vector_layers: list[int] = Field(description="layers whose FFN deltas form the language vectors")
    vector_dim: int = Field(description="length of a language vector (the sketch's dimension when sketched)")
    sketched: bool
    sketch_method: str | None = Field(None, description="count or gaussian when sketched")
    similarity: list[list[float]] = Field(description="cosine similarity of the language vectors (after "
                                                      "subtracting their mean when config.center), order = langs")
    config: DeviationConfig
    probe: dict[str, ProbeInfo] = Field(default_factory=dict)
    base_copy_bytes: int | None = Field(None, description="bytes of the base copy the update kinds keep")
    layer_spread: float | None = Field(None, description="max/min over layers of the mean FFN deviation")
    stability: ProbeStability | None = None
    warnings: list[str] = Field(default_factory=list)
    _vectors: dict[str, torch.Tensor] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _legacy_config(cls, data: Any) -> Any:
        """A result written before the probe had kinds ran the paper's probe: say so in its config."""
        cfg = data.get("config") if isinstance(data, dict) else None
        if isinstance(cfg, dict) and "kind" not in cfg:
            data = {**data, "config": {**LEGACY_PROBE, "sketch_above": None, **cfg}}
        return data

    @property
    def vectors(self) -> dict[str, torch.Tensor]:
        """lang -> language vector (empty after `load` unless the vector file is there)."""
        return self._vectors

    def save(self, path: str | Path, vectors: bool = True) -> None:
        """Write the JSON (and, with `vectors`, `<stem>.vectors.pt` beside it)."""
        path = Path(path)
        if vectors and self._vectors:
            write_with(path.with_suffix(".vectors.pt"), lambda p: torch.save(self._vectors, p))
        write_json(path, self.model_dump(mode="json"))

    @classmethod
    def load(cls, path: str | Path) -> DeviationResult:
        path = Path(path)
        if not path.is_file():
            raise LangmoeError(f"deviation file {path} does not exist: run `langmoe deviation` first")
        try:
            res = cls.model_validate(read_json(path))
        except ValidationError as e:
            raise LangmoeError(error_line(e, f"{path} is not a deviation result")) from None
        except ValueError as e:  # bad JSON or not UTF-8
            raise LangmoeError(f"{path} is not a deviation result: {str(e).splitlines()[0]}") from None
        vec = path.with_suffix(".vectors.pt")
        if vec.is_file():
            res._vectors = torch.load(vec, map_location="cpu", weights_only=True)
        return res


# ---- data ------------------------------------------------------------------------------------------------------

DataSpec = Any  # PackedBlocks | Mapping[str, PackedBlocks] | Callable[[str], BatchSource]


def _language_view(blocks, lang: str):
    """The blocks of one language as their own PackedBlocks (so any sampler sees only that language)."""
    if lang not in blocks.index:
        raise LangmoeError(f"language {lang!r} is not in the packed blocks ({', '.join(blocks.index.codes)})")
    view = blocks.language(lang)
    if len(view) == 0:
        raise LangmoeError(f"language {lang!r} has no training blocks: give it more text or lower block_len")
    return view


def _source_and_fingerprint(data: DataSpec, lang: str, config: DeviationConfig) -> tuple[Any, str]:

    if isinstance(data, PackedBlocks) or (isinstance(data, Mapping) and lang in data):
        blocks = data if isinstance(data, PackedBlocks) else data[lang]
        view = _language_view(blocks, lang)
        tokens = view.tokens  # the probe's data key: one language's blocks, read once (max_tokens_per_lang of them)
        h = hashlib.sha256()
        h.update(f"{tuple(tokens.shape)}|{int(tokens.sum())}|{int(view.lengths.sum())}".encode())
        h.update(tokens[:, :8].numpy().tobytes())
        return (TemperatureSampler(view, config.micro_batch_size, seed=config.seed, grad_accum=config.grad_accum),
                h.hexdigest()[:16])
    if callable(data) and not isinstance(data, Mapping):
        return data(lang), "factory"
    raise LangmoeError(f"no training data for language {lang!r}: pass PackedBlocks, a dict lang -> PackedBlocks, "
                       "or a function lang -> batch source")


def _langs_of(data: DataSpec, langs: Sequence[str] | None) -> list[str]:

    if langs is None:
        if isinstance(data, PackedBlocks):
            langs = [c for c, n in data.counts().items() if n > 0]
        elif isinstance(data, Mapping):
            langs = list(data)
        else:
            raise LangmoeError("pass `langs` when the data is a batch-source factory")
    langs = list(langs)
    if len(langs) < 1 or len(set(langs)) != len(langs):
        raise LangmoeError(f"languages must be non-empty and unique, got {langs}")
    return langs


# ---- the probe over languages ----------------------------------------------------------------------------------


def _weights_fingerprint(model: torch.nn.Module) -> str:
    """Of every parameter that requires grad (what the probe starts from; the key of its cache)."""
    h = hashlib.sha256()
    for name, t in model.named_parameters():
        if not t.requires_grad:
            continue
        t64 = t.detach().double()
        h.update(f"{name}|{tuple(t.shape)}|{float(t64.sum()):.10e}|{float(t64.abs().sum()):.10e}".encode())
    return h.hexdigest()[:16]


def _cache_key(key_fields: Mapping[str, Any], base_fp: str, data_fp: str, lang: str) -> str:
    payload = json.dumps({"v": CACHE_VERSION, "cfg": dict(key_fields), "base": base_fp, "data": data_fp,
                          "lang": lang}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _vector_layers(config: DeviationConfig, n_layers: int) -> list[int]:
    if config.last_n_layers is None:
        return list(range(n_layers))
    if config.last_n_layers > n_layers:
        raise LangmoeError(f"last_n_layers={config.last_n_layers} but the model has {n_layers} layers")
    return list(range(n_layers - config.last_n_layers, n_layers))


class _Plan:
    """What every language's probe shares: target weights, vector layers and sketch, the base copy, the keys."""

    def __init__(self, model: torch.nn.Module, config: DeviationConfig, folder: Path | None = None):
        self.model, self.config = model, config
        self.target: ProbeTarget = probe_target(model, config.include_attention, config.params)
        self.vector_layers = _vector_layers(config, len(self.target.layers))
        self.vector_length = sum(p.numel() for i in self.vector_layers for _, p in self.target.layers[i]["ffn"])
        self.sketch = config.sketch_of(self.vector_length)
        self.base_fp = _weights_fingerprint(model)
        self.base: BaseCopy | None = None
        if config.kind != "gradient":
            self.base = make_base_copy(self.target.trained, config.base_copy, folder)
        self.checkpointing = use_checkpointing(config.checkpointing, self.target, config.settings(),
                                               supported=getattr(model, "supports_gradient_checkpointing", False))

    def stability_plan(self) -> _Plan:
        """The same probe with seed + 1 (another data order), sharing the base copy."""
        other = copy.copy(self)
        other.config = self.config.model_copy(update={"seed": self.config.seed + 1, "stability": False})
        return other

    def key(self, data_fp: str, lang: str) -> str:
        return _cache_key(self.config.key_fields(self.vector_length), self.base_fp, data_fp, lang)

    def sketcher(self):
        return make_sketcher(self.sketch[0], self.sketch[1], self.config.seed) if self.sketch else None

    def restore(self) -> None:
        if self.base is not None:
            self.base.restore(self.target.trained)
        for p in self.target.trained.values():
            p.grad = None


def _probe_language(plan: _Plan, source, lang: str, key: str, on_step) -> tuple[LanguageDeviation, torch.Tensor]:
    """Probe one language from the base, measure it, restore the base."""
    try:
        run = run_probe(plan.model, source, plan.target, plan.config.settings(), on_step)
        m = measure(plan.target.layers, delta_fn(run, plan.base), plan.vector_layers, plan.config.include_attention,
                    plan.sketcher())
    finally:
        plan.restore()
    info = ProbeInfo(steps=len(run.losses), tokens_seen=run.tokens, first_loss=run.losses[0] if run.losses else None,
                     last_loss=run.losses[-1] if run.losses else None, elapsed_s=run.elapsed_s)
    return LanguageDeviation(lang=lang, key=key, dev_ffn=m.dev_ffn, dev_attn=m.dev_attn, probe=info), m.vector


def _probe_languages(plan: _Plan, data: DataSpec, langs: Sequence[str], cache: Path | None, log, bar
                     ) -> tuple[dict[str, LanguageDeviation], dict[str, torch.Tensor]]:
    """Every language once (cached ones read back), the model's base restored after each."""
    per_lang: dict[str, LanguageDeviation] = {}
    vectors: dict[str, torch.Tensor] = {}
    for lang in langs:
        source, data_fp = _source_and_fingerprint(data, lang, plan.config)
        key = plan.key(data_fp, lang)
        rec = _load_cached(cache, lang, key) if cache is not None else None
        if rec is not None:
            per_lang[lang], vectors[lang] = rec
            log(f"deviation: {lang} cached")
            for _ in range(plan.config.steps):
                bar.advance(f"{lang} (cached)")
            continue
        rec_l, vec = _probe_language(plan, source, lang, key, lambda s, x=lang: bar.advance(f"{x} step {s + 1}"))
        per_lang[lang], vectors[lang] = rec_l, vec
        if cache is not None:
            write_with(cache / f"{lang}.vec.pt", lambda p, v=vec: torch.save(v, p))
            write_json(cache / f"{lang}.json", rec_l.model_dump(mode="json"))  # written last: marks done
        info = rec_l.probe
        log(f"deviation: {lang} loss {info.first_loss:.3f} -> {info.last_loss:.3f}, "
            f"max FFN deviation {max(rec_l.dev_ffn):.4g}")
    return per_lang, vectors


def similarity_matrix(vectors: Sequence[torch.Tensor], center: bool | str) -> np.ndarray:
    """Cosine similarity of the language vectors. With `center`, each vector is scaled to unit length and the
    mean over the languages (the direction they all share) is subtracted before the cosines: what is left is what
    sets one language apart, and a language's overall deviation size (e.g. a higher loss) weighs nothing, as in
    a plain cosine. `center="unnormalised"` subtracts the mean of the raw vectors (benchmarks only)."""
    v = torch.stack([x.reshape(-1).double() for x in vectors])
    if center and len(v) > 2:
        if center != "unnormalised":
            v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-300)
        v = v - v.mean(dim=0, keepdim=True)
    return cosine_matrix(v)


def _result(plan: _Plan, langs: list[str], per_lang: Mapping[str, LanguageDeviation],
            vectors: dict[str, torch.Tensor]) -> DeviationResult:
    config = plan.config
    sim = similarity_matrix([vectors[x] for x in langs], config.center)
    result = DeviationResult(
        langs=langs, num_layers=len(plan.target.layers),
        dev_ffn={x: per_lang[x].dev_ffn for x in langs},
        dev_attn={x: per_lang[x].dev_attn for x in langs} if config.include_attention else None,  # type: ignore
        vector_layers=plan.vector_layers, vector_dim=int(vectors[langs[0]].numel()),
        sketched=plan.sketch is not None, sketch_method=plan.sketch[0] if plan.sketch else None,
        similarity=sim.tolist(), config=config, probe={x: per_lang[x].probe for x in langs},
        base_copy_bytes=plan.base.nbytes if plan.base is not None else None,
    )
    result._vectors = vectors
    result.layer_spread = layer_spread(result.dev_ffn)
    if result.layer_spread is not None and result.layer_spread < FLAT_RATIO:
        result.warnings.append(
            f"layer deviations are flat (max/min {result.layer_spread:.3f} < {FLAT_RATIO}): epsilon would pick "
            "MoE layers by noise; probe with more tokens per step (grad_accum, steps), kind gradient, or fix "
            "moe_layers")
    return result


def _probe_seed(plan: _Plan, data: DataSpec, langs: list[str], out_dir: Path | None, log) -> DeviationResult:

    cache = out_dir / "probe" if out_dir is not None else None
    with progress("deviation", len(langs) * plan.config.steps, plain_lines=False,
                  enabled=plan.config.progress) as bar:
        per_lang, vectors = _probe_languages(plan, data, langs, cache, log, bar)
    return _result(plan, langs, per_lang, vectors)


def _add_stability(result: DeviationResult, again: DeviationResult) -> None:
    result.stability = compare_probes(result, again)
    if result.stability.similarity_corr < 0.8:
        result.warnings.append(
            f"the language similarity is unstable (correlation {result.stability.similarity_corr:.2f} between "
            "two probe seeds): groups may be noise; probe with more tokens")


def measure_deviation(model: torch.nn.Module, data: DataSpec, config: DeviationConfig | Mapping[str, Any] | None
                      = None, out_dir: str | Path | None = None, langs: Sequence[str] | None = None,
                      log: Callable[[str], None] | None = None) -> DeviationResult:
    """Probe every language from the base weights of `model` and return deviations, vectors and similarity.

    `data`: one multi-language `PackedBlocks`, a dict `lang -> PackedBlocks`, or a function `lang -> BatchSource`
    (its batches must hold `micro_batch_size` rows). The model ends with its base weights, `requires_grad` flags
    and train/eval mode restored. With `out_dir`, finished languages are cached there and
    `out_dir/deviation.json` (+ vectors) is written; the stability probe (seed + 1) caches under `out_dir/stability`.
    """
    config = DeviationConfig.parse(config)
    log = log or (lambda _m: None)
    langs = _langs_of(data, langs)
    out = Path(out_dir) if out_dir is not None else None
    was_training = model.training
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    plan = _Plan(model, config, out)
    try:
        model.train()
        with only_trained(model, plan.target), checkpointing(model, plan.checkpointing):
            result = _probe_seed(plan, data, langs, out, log)
            if config.stability and len(langs) > 1:
                again = _probe_seed(plan.stability_plan(), data, langs,
                                    out / "stability" if out is not None else None, log)
                _add_stability(result, again)
    finally:
        plan.restore()
        if plan.base is not None:
            plan.base.close()
        model.train(was_training)
    _log_summary(result, log)
    if out is not None:
        result.save(out / "deviation.json")
    return result


def _log_summary(result: DeviationResult, log: Callable[[str], None]) -> None:
    for w in result.warnings:
        log(f"deviation: warning: {w}")
    if result.stability is not None:
        log(f"deviation: probe stability: similarity corr {result.stability.similarity_corr:.3f}, layer corr "
            f"{_fmt(result.stability.layer_corr)}; layer spread max/min {_fmt(result.layer_spread)}")


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def layer_spread(dev_ffn: Mapping[str, Sequence[float]]) -> float | None:
    """max/min over layers of the mean (over languages) FFN deviation; None when a layer did not move."""
    m = np.asarray(list(dev_ffn.values()), dtype=np.float64).mean(axis=0)
    return float(m.max() / m.min()) if m.size and m.min() > 0 else None


def _pearson(a, b) -> float | None:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def compare_probes(a: DeviationResult, b: DeviationResult) -> ProbeStability:
    """Agreement of two probes of the same languages (e.g. two seeds): off-diagonal similarity and layer
    profile correlations."""
    if a.langs != b.langs:
        raise LangmoeError(f"probes of different languages cannot be compared: {a.langs} vs {b.langs}")
    iu = np.triu_indices(len(a.langs), 1)
    sa, sb = np.asarray(a.similarity)[iu], np.asarray(b.similarity)[iu]
    sim = _pearson(sa, sb)
    if sim is None:  # two languages: one pair; agreement = both similarities equal within 0.05
        sim = 1.0 if float(np.abs(sa - sb).max()) < 0.05 else 0.0
    la = np.asarray(list(a.dev_ffn.values())).mean(axis=0)
    lb = np.asarray(list(b.dev_ffn.values())).mean(axis=0)
    return ProbeStability(seeds=[a.config.seed, b.config.seed], similarity_corr=sim, layer_corr=_pearson(la, lb),
                          similarity=[list(r) for r in b.similarity])


def _load_cached(cache: Path, lang: str, key: str) -> tuple[LanguageDeviation, torch.Tensor] | None:
    j, v = cache / f"{lang}.json", cache / f"{lang}.vec.pt"
    if not (j.is_file() and v.is_file()):
        return None
    try:
        rec = LanguageDeviation.model_validate(read_json(j))
    except (ValidationError, json.JSONDecodeError):
        return None
    if rec.key != key:
        return None
    rec.probe.cached = True
    return rec, torch.load(v, map_location="cpu", weights_only=True)


def measure_deviation_on_corpus(model: torch.nn.Module, tokenizer, corpus, langs: Sequence[str],
                                config: DeviationConfig | Mapping[str, Any] | None = None,
                                out_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                                log: Callable[[str], None] | None = None) -> DeviationResult:
    """Pack the train split of `langs` (block_len, max_tokens_per_lang of the config) and probe them."""

    config = DeviationConfig.parse(config)
    check_block_len(model.config, config.block_len)
    blocks = pack_corpus(corpus, tokenizer, list(langs), "train", config.block_len,
                         max_tokens_per_lang=config.max_tokens_per_lang, cache_dir=cache_dir)
    return measure_deviation(model, blocks, config, out_dir=out_dir, langs=langs, log=log)

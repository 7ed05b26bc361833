"""DMoE step A: parameter deviation of each language (docs/methods.md §1 A).

For each language x: fine-tune the dense base θ on x alone for S steps (the shared trainer, a fresh optimizer),
then record per decoder layer `dev_ffn[x][l] = ||θ_x^FFN,l − θ^FFN,l||_F` over the FFN weight matrices (every
≥2-D parameter of the layer's MLP: gate/up/down, c_fc/c_proj, ...; biases and norms excluded) and the same over the
attention block (`dev_attn`, for plots). The language vector is the concatenated FFN delta of the last N layers
(exact, or a random-projection sketch, `langmoe.methods.dmoe.sketch`). Between languages the base weights are
restored in place from one CPU copy of the trainable tensors, so memory is one model plus one copy.

With `out_dir`, each finished language is cached (`probe/<lang>.json` + `probe/<lang>.vec.pt`) under a key of
(config, base weights, that language's data): a killed probe resumes without redoing finished languages.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from langmoe.errors import LangmoeError
from langmoe.io import read_json, write_json, write_with
from langmoe.methods.dmoe.sketch import Sketcher, cosine_matrix
from langmoe.models.adapters import get_adapter
from langmoe.validation import error_line, validate

_FFN_NAMES = ("mlp", "feed_forward", "ffn", "block_sparse_moe", "moe")
_ATTN_NAMES = ("self_attn", "attn", "self_attention", "attention")
CACHE_VERSION = 1
FLAT_RATIO = 1.1  # max/min of the mean per-layer deviation below this: epsilon picks layers by noise


class DeviationConfig(BaseModel):
    """Settings of the per-language probe. Defaults suit the built-in tiny setting (see docs/dmoe-analysis.md);
    the paper probes 10 steps at LR 8e-6 with 2048 × 512-token sequences per step."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(10, gt=0, description="S: optimizer steps of each language's fine-tune")
    lr: float = Field(1e-4, gt=0, description="constant LR of the probe (paper 8e-6 at ~1M tokens per step)")
    micro_batch_size: int = Field(8, gt=0, description="sequences per micro-batch")
    grad_accum: int = Field(4, gt=0, description="micro-batches per probe step (tokens per step = micro_batch_size "
                                                 "× grad_accum × block_len); 4 measured in docs/dmoe-analysis.md")
    stability: bool = Field(True, description="probe a second time with seed + 1 and report how well the two "
                                              "similarity matrices and layer profiles agree (doubles the cost)")
    block_len: int = Field(128, ge=2, description="tokens per sequence when the probe packs a corpus itself")
    max_tokens_per_lang: int | None = Field(
        50_000, gt=0, description="packing cap per language when the probe packs a corpus itself"
    )
    last_n_layers: int | None = Field(3, gt=0, description="layers whose FFN deltas form the language vector "
                                                           "(None: all layers)")
    include_attention: bool = Field(True, description="also record attention deviation (plots only)")
    sketch_dim: int | None = Field(None, gt=0, description="random-projection dimension of the language vector "
                                                           "(None: exact vector)")
    weight_decay: float = Field(0.0, ge=0, description="0: the delta is the data's doing, not the decay's")
    grad_clip: float = Field(1.0, ge=0)
    mixed_precision: Literal["no", "bf16"] = "no"
    seed: int = Field(0, ge=0, description="data order, dropout and sketch seed (the same for every language)")
    progress: bool = Field(False, description="trainer progress bar")

    @classmethod
    def parse(cls, data: Mapping[str, Any] | DeviationConfig | None = None) -> DeviationConfig:
        if isinstance(data, cls):
            return data
        return validate(cls, dict(data or {}), "deviation config", default_loc="deviation config")


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
    vector_dim: int = Field(description="length of a language vector (sketch_dim when sketched)")
    sketched: bool
    similarity: list[list[float]] = Field(description="cosine similarity of the language vectors, order = langs")
    config: DeviationConfig
    probe: dict[str, ProbeInfo] = Field(default_factory=dict)
    layer_spread: float | None = Field(None, description="max/min over layers of the mean FFN deviation")
    stability: ProbeStability | None = None
    warnings: list[str] = Field(default_factory=list)
    _vectors: dict[str, torch.Tensor] = PrivateAttr(default_factory=dict)

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


# ---- finding the FFN and attention of each decoder layer ------------------------------------------------------


def _adapter(model: torch.nn.Module):
    """The MoE core's structural adapter (`langmoe.models.adapters`), or None (e.g. a Mixtral: no upcycling, but
    its deviation can still be measured through the fallbacks below)."""
    try:
        return get_adapter(model)
    except LangmoeError:
        return None


def _probe_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder layers: through the MoE core's adapter when it reads the model, else (probes work on any causal
    LM) the ModuleList whose length is the config's layer count."""
    if (adapter := _adapter(model)) is not None:
        return list(adapter.layers(model))
    cfg = getattr(model, "config", None)
    n = None
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        n = getattr(cfg, attr, None) if cfg is not None else None
        if isinstance(n, int):
            break
    for _name, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) > 0 and (n is None or len(mod) == n):
            return list(mod)
    raise LangmoeError(f"cannot find the decoder layers of {type(model).__name__}: expected a ModuleList of "
                       f"{n} layers")


def _ffn_module(model: torch.nn.Module, layer: torch.nn.Module) -> torch.nn.Module | None:
    if (adapter := _adapter(model)) is not None:
        return adapter.get_mlp(layer)
    return _sub(layer, _FFN_NAMES)


def _sub(layer: torch.nn.Module, names: Sequence[str]) -> torch.nn.Module | None:
    for n in names:
        m = getattr(layer, n, None)
        if isinstance(m, torch.nn.Module):
            return m
    return None


def layer_params(model: torch.nn.Module) -> list[dict[str, list[tuple[str, torch.nn.Parameter]]]]:
    """Per decoder layer: `{"ffn": [(name, param)], "attn": [(name, param)]}` of the weight matrices (≥2-D)."""
    full = {id(p): n for n, p in model.named_parameters()}
    out = []
    for i, layer in enumerate(_probe_layers(model)):
        ffn, attn = _ffn_module(model, layer), _sub(layer, _ATTN_NAMES)
        if ffn is None:
            raise LangmoeError(f"cannot find the FFN of decoder layer {i} ({type(layer).__name__}): expected one "
                               f"of the submodules {', '.join(_FFN_NAMES)}")
        entry: dict[str, list[tuple[str, torch.nn.Parameter]]] = {"ffn": [], "attn": []}
        for kind, mod in (("ffn", ffn), ("attn", attn)):
            if mod is None:
                continue
            for p in mod.parameters():
                if p.dim() >= 2 and id(p) in full:
                    entry[kind].append((full[id(p)], p))
        if not entry["ffn"]:
            raise LangmoeError(f"decoder layer {i} has no FFN weight matrix")
        out.append(entry)
    return out


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
    from langmoe.data.packing import PackedBlocks
    from langmoe.data.samplers import TemperatureSampler

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
    from langmoe.data.packing import PackedBlocks

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


# ---- the probe -------------------------------------------------------------------------------------------------


def _base_fingerprint(base: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name, t in base.items():
        t64 = t.double()
        h.update(f"{name}|{tuple(t.shape)}|{float(t64.sum()):.10e}|{float(t64.abs().sum()):.10e}".encode())
    return h.hexdigest()[:16]


def _cache_key(config: DeviationConfig, base_fp: str, data_fp: str, lang: str) -> str:
    cfg = config.model_dump(mode="json")
    cfg.pop("progress", None)
    payload = json.dumps({"v": CACHE_VERSION, "cfg": cfg, "base": base_fp, "data": data_fp, "lang": lang},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


@torch.no_grad()
def _measure(layers, base: Mapping[str, torch.Tensor], vector_layers: Sequence[int], config: DeviationConfig
             ) -> tuple[list[float], list[float] | None, torch.Tensor]:
    """Per-layer Frobenius deviations and the language vector of the current (fine-tuned) weights."""
    dev_ffn, dev_attn = [], []
    sketcher = Sketcher(config.sketch_dim, config.seed) if config.sketch_dim else None
    pieces: list[torch.Tensor] = []
    vset = set(vector_layers)
    for li, entry in enumerate(layers):
        sq = 0.0
        for name, p in entry["ffn"]:
            delta = p.detach().float().cpu() - base[name].float()
            sq += float(delta.double().pow(2).sum())
            if li in vset:
                if sketcher is not None:
                    sketcher.update(delta)
                else:
                    pieces.append(delta.reshape(-1))
        dev_ffn.append(sq**0.5)
        if config.include_attention:
            sq = 0.0
            for name, p in entry["attn"]:
                sq += float((p.detach().float().cpu() - base[name].float()).double().pow(2).sum())
            dev_attn.append(sq**0.5)
    vec = sketcher.result() if sketcher is not None else torch.cat(pieces)
    return dev_ffn, (dev_attn if config.include_attention else None), vec


def measure_deviation(model: torch.nn.Module, data: DataSpec, config: DeviationConfig | Mapping[str, Any] | None
                      = None, out_dir: str | Path | None = None, langs: Sequence[str] | None = None,
                      log: Callable[[str], None] | None = None) -> DeviationResult:
    """Probe every language from the base weights of `model` and return deviations, vectors and similarity.

    `data`: one multi-language `PackedBlocks`, a dict `lang -> PackedBlocks`, or a function `lang -> BatchSource`
    (its batches must hold `micro_batch_size` rows). The model ends with its base weights restored. With
    `out_dir`, finished languages are cached there and `out_dir/deviation.json` (+ vectors) is written.
    """
    from langmoe.train.trainer import TrainConfig, train

    config = DeviationConfig.parse(config)
    log = log or (lambda _m: None)
    langs = _langs_of(data, langs)
    layers = layer_params(model)
    n_layers = len(layers)
    if config.last_n_layers is None:
        vector_layers = list(range(n_layers))
    else:
        if config.last_n_layers > n_layers:
            raise LangmoeError(f"last_n_layers={config.last_n_layers} but the model has {n_layers} layers")
        vector_layers = list(range(n_layers - config.last_n_layers, n_layers))
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    base = {n: p.detach().to("cpu", copy=True) for n, p in trainable.items()}
    needed = {n for e in layers for kind in ("ffn", "attn") for n, _ in e[kind]}
    missing = needed - set(base)
    if missing:  # frozen FFN weights would never deviate: say so instead of reporting zeros
        raise LangmoeError(f"{len(missing)} FFN/attention weights are frozen (e.g. {sorted(missing)[0]}): "
                           "unfreeze them before the probe")
    base_fp = _base_fingerprint(base)
    cache = Path(out_dir) / "probe" if out_dir is not None else None
    tmp_root = None if out_dir is not None else Path(tempfile.mkdtemp(prefix="langmoe-deviation-"))
    tc = TrainConfig.parse({
        "steps": config.steps, "lr": config.lr, "warmup_ratio": 0.0, "min_lr_ratio": 1.0,
        "weight_decay": config.weight_decay, "grad_clip": config.grad_clip, "grad_accum": config.grad_accum,
        "micro_batch_size": config.micro_batch_size, "mixed_precision": config.mixed_precision,
        "log_every": 1, "save_every": 0, "seed": config.seed, "progress": config.progress,
    })
    per_lang: dict[str, LanguageDeviation] = {}
    vectors: dict[str, torch.Tensor] = {}
    was_training = model.training
    from contextlib import ExitStack

    from langmoe.console import progress as _progress

    stack = ExitStack()  # a transient bar over languages on a terminal, unless the trainer draws its own per language
    bar = stack.enter_context(_progress("deviation", len(langs), plain_lines=False, enabled=not config.progress))
    try:
        for lang in langs:
            bar.advance(lang)
            source, data_fp = _source_and_fingerprint(data, lang, config)
            key = _cache_key(config, base_fp, data_fp, lang)
            if cache is not None:
                rec = _load_cached(cache, lang, key)
                if rec is not None:
                    per_lang[lang], vectors[lang] = rec
                    log(f"deviation: {lang} cached")
                    continue
            work = (cache / lang) if cache is not None else (tmp_root / lang)  # type: ignore[operator]
            shutil.rmtree(work, ignore_errors=True)  # no checkpoints: a killed language restarts from the base
            t0 = time.perf_counter()
            res = train(model, source, tc, work)
            dev_ffn, dev_attn, vec = _measure(layers, base, vector_layers, config)
            info = ProbeInfo(steps=res.final_step, tokens_seen=res.tokens_seen,
                             first_loss=res.losses[0] if res.losses else None,
                             last_loss=res.losses[-1] if res.losses else None,
                             elapsed_s=time.perf_counter() - t0)
            _restore(trainable, base)
            rec_l = LanguageDeviation(lang=lang, key=key, dev_ffn=dev_ffn, dev_attn=dev_attn, probe=info)
            per_lang[lang], vectors[lang] = rec_l, vec
            if cache is not None:
                write_with(cache / f"{lang}.vec.pt", lambda p, v=vec: torch.save(v, p))
                write_json(cache / f"{lang}.json", rec_l.model_dump(mode="json"))  # written last: marks done
                shutil.rmtree(work, ignore_errors=True)
            log(f"deviation: {lang} loss {info.first_loss:.3f} -> {info.last_loss:.3f}, "
                f"max FFN deviation {max(dev_ffn):.4g}")
    finally:
        stack.close()
        _restore(trainable, base)
        model.train(was_training)
        if tmp_root is not None:
            shutil.rmtree(tmp_root, ignore_errors=True)
    sim = cosine_matrix(torch.stack([vectors[x].double() for x in langs]))
    result = DeviationResult(
        langs=langs, num_layers=n_layers,
        dev_ffn={x: per_lang[x].dev_ffn for x in langs},
        dev_attn={x: per_lang[x].dev_attn for x in langs} if config.include_attention else None,  # type: ignore
        vector_layers=vector_layers, vector_dim=int(vectors[langs[0]].numel()),
        sketched=config.sketch_dim is not None, similarity=sim.tolist(), config=config,
        probe={x: per_lang[x].probe for x in langs},
    )
    result._vectors = vectors
    result.layer_spread = layer_spread(result.dev_ffn)
    if result.layer_spread is not None and result.layer_spread < FLAT_RATIO:
        result.warnings.append(
            f"layer deviations are flat (max/min {result.layer_spread:.3f} < {FLAT_RATIO}): epsilon would pick "
            "MoE layers by noise; probe with more tokens per step (grad_accum, steps) or fix moe_layers")
    if config.stability and len(langs) > 1:
        again = measure_deviation(model, data, config.model_copy(update={"seed": config.seed + 1,
                                                                          "stability": False}),
                                  out_dir=Path(out_dir) / "stability" if out_dir is not None else None,
                                  langs=langs, log=log)
        result.stability = compare_probes(result, again)
        if result.stability.similarity_corr < 0.8:
            result.warnings.append(
                f"the language similarity is unstable (correlation {result.stability.similarity_corr:.2f} "
                "between two probe seeds): groups may be noise; probe with more tokens per step")
    for w in result.warnings:
        log(f"deviation: warning: {w}")
    if result.stability is not None:
        log(f"deviation: probe stability: similarity corr {result.stability.similarity_corr:.3f}, layer corr "
            f"{_fmt(result.stability.layer_corr)}; layer spread max/min {_fmt(result.layer_spread)}")
    if out_dir is not None:
        result.save(Path(out_dir) / "deviation.json")
    return result


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def layer_spread(dev_ffn: Mapping[str, Sequence[float]]) -> float | None:
    """max/min over layers of the mean (over languages) FFN deviation; None when a layer did not move."""
    import numpy as np

    m = np.asarray(list(dev_ffn.values()), dtype=np.float64).mean(axis=0)
    return float(m.max() / m.min()) if m.size and m.min() > 0 else None


def _pearson(a, b) -> float | None:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def compare_probes(a: DeviationResult, b: DeviationResult) -> ProbeStability:
    """Agreement of two probes of the same languages (e.g. two seeds): off-diagonal similarity and layer
    profile correlations."""
    import numpy as np

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


@torch.no_grad()
def _restore(trainable: Mapping[str, torch.nn.Parameter], base: Mapping[str, torch.Tensor]) -> None:
    for n, p in trainable.items():
        p.copy_(base[n].to(device=p.device, dtype=p.dtype))
        p.grad = None


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
    from langmoe.data.packing import check_block_len, pack_corpus

    config = DeviationConfig.parse(config)
    check_block_len(model.config, config.block_len)
    blocks = pack_corpus(corpus, tokenizer, list(langs), "train", config.block_len,
                         max_tokens_per_lang=config.max_tokens_per_lang, cache_dir=cache_dir)
    return measure_deviation(model, blocks, config, out_dir=out_dir, langs=langs, log=log)

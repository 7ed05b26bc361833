"""langmoe's saved MoE format: what `config.json` of an MoE folder says, and the in-memory class that writes it.

A langmoe MoE folder's config.json is

    {"model_type": "langmoe_moe", "architectures": ["LangmoeMoEForCausalLM"],
     "base_config": {...the dense model's config, its own model_type...},
     "langmoe": {"version": 3, "layers": {"3": {"num_experts": 4, ...}, ...}}, ...}

Its own `model_type` means stock transformers without langmoe refuses the folder instead of loading the dense
model with random FFNs. `MoEStructure` is the schema of the `langmoe` key (the MoE layers and their settings).

In memory an MoE model is an instance of `LangmoeMoE<Dense>ForCausalLM`, a subclass of both the dense class and
`LangmoeMoEForCausalLM` (made by `make_native`), so `isinstance(model, LlamaForCausalLM)` still holds and any
`model.save_pretrained(...)` writes the native format. Reading a folder is `moe_io`'s; the class transformers'
Auto API calls for a `langmoe_moe` folder is `native.LangmoeMoELoader`.

This module does not import transformers at its top (see `dense_config_from_dict`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from langmoe.errors import LangmoeError

__all__ = [
    "NATIVE_MODEL_TYPE",
    "NATIVE_ARCHITECTURE",
    "STRUCTURE_VERSION",
    "MoELayerSpec",
    "MoEStructure",
    "upgraded_structure",
    "renamed_override_weights",
    "moe_structure",
    "LangmoeMoEForCausalLM",
    "make_native",
    "native_class",
    "native_config_dict",
    "dense_config_from_dict",
]

NATIVE_MODEL_TYPE = "langmoe_moe"
NATIVE_ARCHITECTURE = "LangmoeMoEForCausalLM"
STRUCTURE_VERSION = 3  # 3: a layer's route override is one entry `route_override: {"kind": ...}`, its weights
# `router.override.*`; 2: native folder, experts named as transformers names them, the override as `classifier` /
# `language_gate` fields (weights `router.classifier.*` / `router.gate.*`); 1: legacy (w_gate/w_up/w_out)


# ---- the `langmoe` key: MoE layers and their settings ----------------------------------------------------------


class MoELayerSpec(BaseModel):
    """One MoE layer. `route_override`: the router's override (`{"kind": "classifier" | "language_gate", ...}`,
    see `langmoe.models.overrides`), None for plain learned top-k."""

    model_config = ConfigDict(extra="forbid")
    num_experts: int = Field(ge=1)
    top_k: int = Field(ge=1)
    renormalize: bool = True
    frozen_expert0: bool = False
    route_override: dict[str, Any] | None = None

    @field_validator("route_override")
    @classmethod
    def _has_kind(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None and not isinstance(v.get("kind"), str):
            raise ValueError("a route override names its kind (e.g. {'kind': 'classifier', 'mode': 'token'})")
        return v


class MoEStructure(BaseModel):
    """What `model.config.langmoe` holds: the MoE layers and their settings (keys are layer indices)."""

    model_config = ConfigDict(extra="forbid")
    version: int = STRUCTURE_VERSION
    layers: dict[int, MoELayerSpec]

    def to_config(self) -> dict[str, Any]:
        return {"version": self.version, "layers": {str(k): v.model_dump() for k, v in sorted(self.layers.items())}}

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> MoEStructure:
        """Validate a `langmoe` entry; entries of versions 1-2 are read into today's shape."""
        try:
            return cls.model_validate(upgraded_structure(raw))
        except ValidationError as e:
            first = e.errors()[0]
            raise LangmoeError(f"invalid MoE structure in config.langmoe: {first['loc']}: {first['msg']}") from None


def upgraded_structure(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A `langmoe` entry of any version in today's shape: before version 3 the override was two kinds of fields
    (`classifier` + `classifier_mode`, `language_gate`), now it is one `route_override` entry."""
    raw = dict(raw)
    if int(raw.get("version", 1)) >= STRUCTURE_VERSION or not isinstance(raw.get("layers"), Mapping):
        return raw
    layers = {}
    for key, spec in raw["layers"].items():
        spec = dict(spec) if isinstance(spec, Mapping) else spec
        if isinstance(spec, dict):
            classifier, mode = spec.pop("classifier", False), spec.pop("classifier_mode", "token")
            gate = spec.pop("language_gate", None)
            override = None
            if classifier:
                override = {"kind": "classifier", "mode": mode}
            if gate:
                override = {"kind": "language_gate", **dict(gate)}
            spec["route_override"] = override
        layers[key] = spec
    return {**raw, "version": STRUCTURE_VERSION, "layers": layers}


def renamed_override_weights(state: dict[str, Any]) -> dict[str, Any]:
    """State dict of a version-1/2 folder with its override weights under today's name (`router.override.*`)."""
    out = {}
    for k, v in state.items():
        for old in (".router.classifier.", ".router.gate."):
            k = k.replace(old, ".router.override.")
        out[k] = v
    return out


def moe_structure(model) -> MoEStructure | None:
    """The MoE structure a model's config records, or None (a dense model)."""
    raw = getattr(model.config, "langmoe", None)
    return MoEStructure.parse(raw) if raw else None


# ---- config.json ------------------------------------------------------------------------------------------------


def dense_config_from_dict(base: dict, structure: dict | None):
    """The dense config object of a `base_config` dict (its own config class), carrying `structure` if given."""
    # transformers is imported here, not at the top: this module must import without it (the registration hook
    # of `langmoe/__init__` runs while transformers itself is being imported, see `native.py`)
    from transformers import CONFIG_MAPPING

    model_type = base.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise LangmoeError(f"base model_type {model_type!r} of this MoE folder is unknown to transformers "
                           "(upgrade transformers, or the folder is damaged)")
    config = CONFIG_MAPPING[model_type].from_dict(dict(base))
    if structure:
        config.langmoe = dict(structure)
    return config


def native_config_dict(dense: dict, dense_architecture: str | None) -> dict:
    """config.json of the native format from the dense config dict that carries `langmoe`."""
    dense = dict(dense)
    structure = dense.pop("langmoe")
    if dense_architecture:
        dense["architectures"] = [dense_architecture]
    out = {
        "model_type": NATIVE_MODEL_TYPE,
        "architectures": [NATIVE_ARCHITECTURE],
        "base_config": dense,
        "langmoe": structure,
    }
    for key in ("dtype", "transformers_version"):
        if key in dense:
            out[key] = dense[key]
    return out


# ---- the in-memory class that saves in this format -------------------------------------------------------------


class LangmoeMoEForCausalLM:
    """Base of every in-memory langmoe MoE model class: `save_pretrained` writes the native config.json.

    (`native.LangmoeMoELoader`, a subclass, is what transformers' Auto API calls to load such a folder.)
    """

    _dense_class: type | None = None

    def save_pretrained(self, save_directory, *args, **kwargs):
        """The dense class's `save_pretrained`, then config.json rewritten in the native format."""
        config = self.config
        dense_arch = self._dense_class.__name__ if self._dense_class is not None else None
        try:
            result = super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            config.architectures = [dense_arch] if dense_arch else None
        path = Path(save_directory) / "config.json"
        if path.exists():
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("model_type") != NATIVE_MODEL_TYPE and raw.get("langmoe"):
                path.write_text(json.dumps(native_config_dict(raw, dense_arch), indent=2, sort_keys=True) + "\n",
                                encoding="utf-8")
        return result


_NATIVE_CLASSES: dict[type, type] = {}


def native_class(dense_cls: type) -> type:
    """`LangmoeMoE<Dense>`: the dense model class with `LangmoeMoEForCausalLM` in front (cached)."""
    if issubclass(dense_cls, LangmoeMoEForCausalLM):
        return dense_cls
    cls = _NATIVE_CLASSES.get(dense_cls)
    if cls is None:
        name = f"LangmoeMoE{dense_cls.__name__}"
        cls = type(name, (LangmoeMoEForCausalLM, dense_cls), {
            "config_class": dense_cls.config_class, "_dense_class": dense_cls, "__module__": __name__,
            "__doc__": f"{dense_cls.__name__} with langmoe MoE blocks (saved in the native langmoe_moe format).",
        })
        _NATIVE_CLASSES[dense_cls] = cls
        globals()[name] = cls  # findable by pickle in this process
    return cls


def make_native(model):
    """Make `model` (a dense HF causal LM carrying MoE blocks) an instance of its native class, in place.

    A model that is no transformers `PreTrainedModel` (a plain torch module) has no native format: left as it is."""
    if getattr(type(model), "config_class", None) is None:
        return model
    model.__class__ = native_class(type(model))
    return model

"""langmoe's native MoE folder format: its own `model_type`, so no loader can misread it as the dense model.

A langmoe MoE folder's config.json is

    {"model_type": "langmoe_moe", "architectures": ["LangmoeMoEForCausalLM"],
     "base_config": {...the dense model's config, its own model_type...},
     "langmoe": {"version": 2, "layers": {"3": {"num_experts": 4, ...}, ...}}, ...}

Stock transformers does not know `langmoe_moe`, so `AutoModelForCausalLM.from_pretrained(folder)` without langmoe
fails loudly instead of loading the dense model with random FFNs. `import langmoe` registers
`LangmoeMoEConfig` / `LangmoeMoEForCausalLM` with `AutoConfig` / `AutoModelForCausalLM`; loading then goes through
`moe_io.load_moe_pretrained` and returns the dense architecture's model class with the MoE blocks in place
(so `generate()` and the KV cache are the dense model's own).

In memory an MoE model is an instance of `LangmoeMoE<Dense>ForCausalLM`, a subclass of both the dense class and
`LangmoeMoEForCausalLM` (made by `make_native`), so `isinstance(model, LlamaForCausalLM)` still holds and any
`model.save_pretrained(...)` writes the native format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import PreTrainedConfig

__all__ = [
    "NATIVE_MODEL_TYPE",
    "NATIVE_ARCHITECTURE",
    "LangmoeMoEConfig",
    "LangmoeMoEForCausalLM",
    "make_native",
    "native_config_dict",
    "register_with_transformers",
]

NATIVE_MODEL_TYPE = "langmoe_moe"
NATIVE_ARCHITECTURE = "LangmoeMoEForCausalLM"


class LangmoeMoEConfig(PreTrainedConfig):
    """The native folder's config: the dense config (`base_config`, a dict) plus the MoE structure (`langmoe`).

    Reading an attribute it does not have falls back to the dense config (`config.vocab_size` works).
    """

    model_type = NATIVE_MODEL_TYPE

    def __init__(self, base_config: dict | None = None, langmoe: dict | None = None, **kwargs):
        self.base_config = dict(base_config or {})
        self.langmoe = dict(langmoe or {})
        super().__init__(**kwargs)

    def __getattr__(self, name: str) -> Any:
        base = self.__dict__.get("base_config") or {}
        if name in base:
            return base[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def dense_config(self):
        """The dense architecture's config object (its own class, e.g. LlamaConfig), with the MoE structure."""
        return dense_config_from_dict(self.base_config, self.langmoe)


def dense_config_from_dict(base: dict, structure: dict | None):
    from transformers import CONFIG_MAPPING

    from langmoe.errors import LangmoeError

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


class LangmoeMoEForCausalLM:
    """Entry point registered with `AutoModelForCausalLM` and base of every in-memory langmoe MoE model class.

    `from_pretrained` / `from_config` build the dense architecture, put the MoE blocks in place and load the exact
    weights (`moe_io.load_moe_pretrained`); `save_pretrained` writes the native config.json.
    """

    config_class = LangmoeMoEConfig
    _dense_class: type | None = None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, dtype=None, torch_dtype=None, config=None,
                        device_map=None, **kwargs):
        """Load through langmoe's loader. `dtype` ("auto" = as saved) and a single-device `device_map` are honoured;
        other loading options of transformers (quantization, offloading, revisions) are not supported here."""
        import torch

        from langmoe.models.moe_io import load_moe_pretrained

        want = dtype if dtype is not None else torch_dtype
        if isinstance(want, str):
            want = None if want == "auto" else _torch_dtype(want)
        model = load_moe_pretrained(pretrained_model_name_or_path, dtype=want)
        if isinstance(device_map, str | torch.device | int) and device_map != "auto":
            model.to(device_map if not isinstance(device_map, int) else f"cuda:{device_map}")
        elif isinstance(device_map, dict) and len(set(device_map.values())) == 1:
            model.to(next(iter(device_map.values())))
        return model

    @classmethod
    def from_config(cls, config, **kwargs):
        return cls._from_config(config, **kwargs)

    @classmethod
    def _from_config(cls, config, dtype=None, torch_dtype=None, **kwargs):
        """A fresh MoE model from a native config (experts = copies of randomly initialised FFNs)."""
        from transformers import AutoModelForCausalLM

        from langmoe.models.upcycle import apply_moe_structure

        dense = config.dense_config() if isinstance(config, LangmoeMoEConfig) else config
        structure = getattr(dense, "langmoe", None)
        model = AutoModelForCausalLM.from_config(dense, dtype=dtype or torch_dtype)
        return apply_moe_structure(model, structure)

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


def _torch_dtype(name: str):
    import torch

    value = getattr(torch, name, None)
    return value if isinstance(value, torch.dtype) else None


_REGISTERED = False


def register_with_transformers() -> None:
    """`AutoConfig` / `AutoModelForCausalLM` learn `langmoe_moe` (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AutoConfig, AutoModelForCausalLM

    AutoConfig.register(NATIVE_MODEL_TYPE, LangmoeMoEConfig, exist_ok=True)
    AutoModelForCausalLM.register(LangmoeMoEConfig, LangmoeMoEForCausalLM, exist_ok=True)
    _REGISTERED = True

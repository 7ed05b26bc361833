"""The classes transformers' Auto API uses for a langmoe MoE folder (`model_type: langmoe_moe`), and their
registration.

`import langmoe` registers `LangmoeMoEConfig` / `LangmoeMoELoader` with `AutoConfig` / `AutoModelForCausalLM` as
soon as transformers is imported; `AutoModelForCausalLM.from_pretrained(folder)` then goes through
`moe_io.load_moe_pretrained` and returns the dense architecture's model class with the MoE blocks in place (so
`generate()` and the KV cache are the dense model's own), an instance of `moe_format.LangmoeMoEForCausalLM`.
The top of the loading layers: the saved format (`moe_format`) -> the loader (`moe_io`) -> these classes.

The registration hook runs while transformers itself is being imported, so every langmoe module this one imports
must import without transformers (none of them imports it at its top); should the hook find this module half
imported (it imported transformers first), the module registers itself when it finishes.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedConfig

from langmoe.models.moe_format import NATIVE_MODEL_TYPE, LangmoeMoEForCausalLM, dense_config_from_dict
from langmoe.models.moe_io import load_moe_pretrained
from langmoe.models.upcycle import apply_moe_structure

__all__ = ["LangmoeMoEConfig", "LangmoeMoELoader", "register_with_transformers"]


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


class LangmoeMoELoader(LangmoeMoEForCausalLM):
    """Entry point registered with `AutoModelForCausalLM`: `from_pretrained` / `from_config` build the dense
    architecture, put the MoE blocks in place and load the exact weights (`moe_io.load_moe_pretrained`)."""

    config_class = LangmoeMoEConfig

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, dtype=None, torch_dtype=None, config=None,
                        device_map=None, **kwargs):
        """Load through langmoe's loader. `dtype` ("auto" = as saved) and a single-device `device_map` are honoured;
        other loading options of transformers (quantization, offloading, revisions) are not supported here."""
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
        dense = config.dense_config() if isinstance(config, LangmoeMoEConfig) else config
        structure = getattr(dense, "langmoe", None)
        model = AutoModelForCausalLM.from_config(dense, dtype=dtype or torch_dtype)
        return apply_moe_structure(model, structure)


def _torch_dtype(name: str):
    value = getattr(torch, name, None)
    return value if isinstance(value, torch.dtype) else None


_REGISTERED = False


def register_with_transformers() -> None:
    """`AutoConfig` / `AutoModelForCausalLM` learn `langmoe_moe` (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    AutoConfig.register(NATIVE_MODEL_TYPE, LangmoeMoEConfig, exist_ok=True)
    AutoModelForCausalLM.register(LangmoeMoEConfig, LangmoeMoELoader, exist_ok=True)
    _REGISTERED = True


register_with_transformers()  # importing this module means wanting the format known (idempotent)

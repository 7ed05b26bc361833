"""The method registry: every system a recipe can list registers here, from its own folder.

A method is a name, a settings class (validated from the recipe's `systems` entry), a `run(run_context, settings)`
function that returns `{row name: summary row}`, a display label and a display order (the report and the summary
table sort by it). `load_methods` imports the method folders named in `METHOD_PACKAGES`; it is the only place in
langmoe that imports a method folder, so adding a method is its folder plus one line here.

This module imports nothing from langmoe (and nothing heavy), so config parsing and the report can use it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The method folders under langmoe/methods/ that register systems (import order = registration order).
METHOD_PACKAGES: tuple[str, ...] = (
    "base",
    "cpt",
    "xelm",
    "btx",
    "dmoe",
    "lora",
    "moe_lpr",
    "layermoe",
)


class MethodRegistryError(Exception):
    """A registration that contradicts an earlier one (a programming error, not bad user input)."""


@dataclass(frozen=True)
class Method:
    """One registered system. `row_labels` labels extra summary rows, keyed by the row-name suffix
    (e.g. {"_hard": "hard routing"} makes row "dmoe_hard" read "DMoE (hard routing)").

    Optional hooks: `expand` (`expand(config, out)`, the method as `langmoe expand --method <name>` runs it: one
    system, written to one model folder; `expand_config_cls` validates its config) and `report_sections`
    (`[(title, shows, write)]`: the method's part of the HTML report, `write(page)`, where `shows(page)` finds its
    results in the run; `page` is the report being written, see `langmoe.report.html`)."""

    name: str
    config_cls: type
    run: Callable[[Any, Any], Mapping[str, Any]]
    label: str
    order: float
    row_labels: Mapping[str, str] = field(default_factory=dict)
    expand: Callable[[Any, Any], Any] | None = None
    expand_config_cls: type | None = None
    report_sections: tuple[tuple[str, Callable[[Any], bool], Callable[[Any], None]], ...] = ()

    def row_display(self, row: str) -> dict[str, Any]:
        """Label and sort order of one summary row of this method."""
        if row == self.name:
            return {"method": self.name, "label": self.label, "order": float(self.order)}
        suffixes = list(self.row_labels)
        for i, suffix in enumerate(suffixes):
            if row == self.name + suffix:
                return {"method": self.name, "label": f"{self.label} ({self.row_labels[suffix]})",
                        "order": float(self.order) + (i + 1) / (len(suffixes) + 1)}
        return {"method": self.name, "label": row, "order": float(self.order) + 0.99}


_METHODS: dict[str, Method] = {}
_PROVIDERS: dict[str, Callable[..., Any]] = {}
_LOADED = False


def register_method(name: str, config_cls: type, run: Callable[[Any, Any], Mapping[str, Any]], label: str,
                    order: float, row_labels: Mapping[str, str] | None = None, *,
                    expand: Callable[[Any, Any], Any] | None = None, expand_config_cls: type | None = None,
                    report_sections: Sequence[tuple[str, Callable[[Any], bool], Callable[[Any], None]]] = ()
                    ) -> Method:
    """Register system `name` (hooks: see `Method`). Re-registering the same name from the same place (a module
    reload) replaces it."""
    if not name or not name.replace("_", "").isalnum() or not name[0].isalpha() or name != name.lower():
        raise MethodRegistryError(f"method name {name!r}: use lower-case letters, digits and _")
    old = _METHODS.get(name)
    if old is not None and getattr(old.run, "__module__", None) != getattr(run, "__module__", None):
        raise MethodRegistryError(f"method {name!r} is already registered by {old.run.__module__}")
    m = Method(name, config_cls, run, label, float(order), dict(row_labels or {}), expand, expand_config_cls,
               tuple(report_sections))
    _METHODS[name] = m
    return m


def register_provider(name: str, fn: Callable[..., Any]) -> None:
    """Register a shared artifact other methods may ask for by name (e.g. "language_groups"), so no method
    has to import another method's folder."""
    _PROVIDERS[name] = fn


def load_methods() -> None:
    """Import every method folder in `METHOD_PACKAGES` (each registers itself); idempotent."""
    global _LOADED
    if _LOADED:
        return
    for pkg in METHOD_PACKAGES:
        importlib.import_module(f"langmoe.methods.{pkg}")
    _LOADED = True


def expanding_methods() -> list[Method]:
    """The methods `langmoe expand` can run (those registered with an `expand` hook), in display order."""
    return [m for m in list_methods() if m.expand is not None]


def method_names() -> list[str]:
    """Registered names, in display order."""
    load_methods()
    return [m.name for m in sorted(_METHODS.values(), key=lambda m: (m.order, m.name))]


def list_methods() -> list[Method]:
    load_methods()
    return sorted(_METHODS.values(), key=lambda m: (m.order, m.name))


def get_method(name: str) -> Method:
    """The method registered as `name`; an unknown name raises KeyError with the known names."""
    load_methods()
    try:
        return _METHODS[name]
    except KeyError:
        raise KeyError(f"unknown system {name!r}: choose from {', '.join(method_names())}") from None


def get_provider(name: str) -> Callable[..., Any]:
    load_methods()
    try:
        return _PROVIDERS[name]
    except KeyError:
        raise KeyError(f"no method provides {name!r} (known: {', '.join(sorted(_PROVIDERS))})") from None


def row_display(row: str) -> dict[str, Any]:
    """Label and order of a summary row, from the method whose name is the longest prefix of `row`."""
    best = None
    for m in list_methods():
        if (row == m.name or row.startswith(m.name + "_")) and (best is None or len(m.name) > len(best.name)):
            best = m
    if best is None:
        return {"method": None, "label": row, "order": 1e9}
    return best.row_display(row)

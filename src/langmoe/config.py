"""The recipe: one typed, validated description of an experiment (model, data, budget, and the systems to compare).

`langmoe run recipe.yaml` and `langmoe demo` read a YAML file into `Recipe`; the resolved recipe (defaults filled
in) is written into every run folder as `config.yaml`, so a run says exactly what produced it.

Shared settings stay at the top level (model, corpus, languages, data, eval, seed, threads, save_every, the token
budget `budget_steps` and the shared optimiser settings `optim`); each entry of `systems` is a registered method's
name or `{name: <method>, <its settings>}`, validated by that method's settings class (see
`langmoe.registry`). Every training stage shares one micro-batch size and block length, so a token budget
is a number of optimizer steps: every trained system gets `budget_steps` steps (see `Recipe.budget_tokens`).

Recipes written before the registry (DMoE's knobs such as `epsilon` or `stage1` at the top level) are translated
into the new shape on load (`langmoe.recipe_legacy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from langmoe import registry
from langmoe.errors import LangmoeError
from langmoe.eval.settings import RECIPE_EVAL, EvalSettings, RecipeEval, default_for
from langmoe.recipe_legacy import translate
from langmoe.train.optim import OptimSettings, StageOptim
from langmoe.validation import error_line

__all__ = ["DataSettings", "EvalSettings", "MethodConfig", "OptimSettings", "Recipe", "StageOptim", "SystemEntry",
           "builtin_recipe_path", "load_recipe", "parse_recipe"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def is_partition(groups: list[list[str]], languages: list[str]) -> bool:
    """Every language in exactly one group and no group empty (the check of every `groups` setting)."""
    return sorted(x for g in groups for x in g) == sorted(languages) and all(groups)


class MethodConfig(_Strict):
    """Base of every method's settings. Fields named in `optim_fields` are optimiser settings: the recipe's shared
    `optim` fills whatever the entry leaves out (entry values win); the mapped value is the default `steps`
    (None: the field has no steps)."""

    optim_fields: ClassVar[dict[str, int | None]] = {}

    @model_validator(mode="before")
    @classmethod
    def _shared_optim(cls, data: Any, info) -> Any:
        if not isinstance(data, dict) or not cls.optim_fields:
            return data
        shared = dict((info.context or {}).get("optim") or {})
        data = dict(data)
        for name, steps in cls.optim_fields.items():
            given = data.get(name)
            if given is None:
                given = {}
            if not isinstance(given, dict):
                continue  # the field's own validation reports it
            merged = {**shared, **given}
            if steps is not None:
                merged.setdefault("steps", steps)
            data[name] = merged
        return data

    def check(self, recipe: Recipe) -> None:
        """Cross-checks against the whole recipe (languages, budget); raise ValueError with a fix."""


class DataSettings(_Strict):
    """How text becomes training blocks. Shared by every system so token budgets compare."""

    block_len: int = Field(128, ge=8, description="tokens per training sequence")
    micro_batch_size: int = Field(8, gt=0, description="sequences per optimizer step (all stages, all systems)")
    tau: float = Field(0.3, ge=0, le=1, description="language sampling p ∝ size^tau (inside a group for DMoE)")
    max_train_tokens_per_lang: int | None = Field(
        200_000, gt=0, description="cap on packed training tokens per language (None: all)"
    )


@dataclass(frozen=True)
class SystemEntry:
    """One validated entry of `Recipe.systems`: the method name and its settings object."""

    name: str
    settings: Any

    def dump(self) -> str | dict[str, Any]:
        body = self.settings.model_dump(mode="json") if isinstance(self.settings, BaseModel) else {}
        return {"name": self.name, **body} if body else self.name


class Recipe(_Strict):
    """A whole experiment. See docs/dmoe.md for every field and the defaults' reasons."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: str = "dmoe"
    model: str = Field("builtin", description="a Hugging Face causal LM folder, or 'builtin' (shipped tiny base)")
    corpus: str | list[str] = Field("builtin", description="'builtin', a corpus folder or a <lang>.* file, or a "
                                    "list of those to mix (see langmoe.data.corpus.MixedCorpus)")
    languages: list[str] = Field(min_length=2)
    data: DataSettings = DataSettings()
    budget_steps: int = Field(100, gt=0, description="optimizer steps every trained system gets (equal budget)")
    optim: OptimSettings = Field(OptimSettings(), description="shared optimiser settings; a system may override")
    eval: RecipeEval = default_for(RECIPE_EVAL)  # the one EvalSettings class, this context's defaults
    seed: int = 0
    systems: list[Any] = Field(default_factory=lambda: ["base", "dmoe", "cpt"],
                               description="method names or {name: <method>, <settings>}")
    threads: int = Field(2, ge=1, description="torch CPU threads")
    save_every: int = Field(20, ge=0, description="checkpoint every N steps inside training stages; 0: off")

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:

        return translate(data) if isinstance(data, dict) else data

    @field_validator("corpus")
    @classmethod
    def _check_corpus(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list):
            if not v:
                raise ValueError("the corpus list is empty: give 'builtin', a folder or a <lang>.* file (or several)")
            if any(not str(x).strip() for x in v):
                raise ValueError("a corpus list entry is empty: give 'builtin', a folder or a <lang>.* file")
            if len(set(v)) != len(v):
                raise ValueError("list each corpus source once")
            return v[0] if len(v) == 1 else v
        return v

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        if len(set(self.languages)) != len(self.languages):
            raise ValueError("languages: list each language once")
        if self.eval.stride >= self.eval.window:
            raise ValueError("eval.stride must be smaller than eval.window")
        if self.eval.split == "train":
            raise ValueError("eval.split: a recipe scores held-out text: valid or test")
        if self.eval.unigram:
            raise ValueError("eval.unigram: a recipe does not score the unigram baseline (langmoe eval does): "
                             "drop it")
        self.systems = _resolve_systems(self)
        names = [s.name for s in self.systems]
        if len(set(names)) != len(names) or not names:
            raise ValueError("systems: list each system once, at least one")
        for s in self.systems:
            if isinstance(s.settings, MethodConfig):
                try:
                    s.settings.check(self)
                except ValueError as e:
                    raise LangmoeError(f"recipe: systems.{s.name}: {e}") from None
        return self

    @field_serializer("systems")
    def _dump_systems(self, systems: list[Any]) -> list[Any]:
        return [s.dump() if isinstance(s, SystemEntry) else s for s in systems]

    # -- systems ----------------------------------------------------------------------------------------------

    @property
    def system_names(self) -> list[str]:
        return [s.name for s in self.systems]

    def settings(self, name: str) -> Any | None:
        """The validated settings of system `name`, or None when the recipe does not list it."""
        return next((s.settings for s in self.systems if s.name == name), None)

    def default_settings(self, name: str) -> Any:
        """The settings system `name` would get from an entry that names it only (shared `optim` applied)."""
        return _method_settings(self, name, {})

    # -- token budgets ----------------------------------------------------------------------------------------

    @property
    def tokens_per_step(self) -> int:
        return self.data.micro_batch_size * self.data.block_len

    @property
    def budget_tokens(self) -> int:
        return self.budget_steps * self.tokens_per_step

    def train_config(self, optim: OptimSettings, seed_offset: int = 0, steps: int | None = None) -> dict[str, Any]:
        """The trainer's config dict for one stage (`steps` defaults to the stage's own `optim.steps`)."""
        return {
            **optim.optim_dict(),
            "steps": steps if steps is not None else optim.steps,
            "micro_batch_size": self.data.micro_batch_size,
            "grad_accum": 1,
            "seed": self.seed + seed_offset,
            "save_every": self.save_every,
            "log_every": 10,
            "keep_checkpoints": 2,
        }


def _method_settings(recipe: Recipe, name: str, body: dict[str, Any]) -> Any:
    try:
        method = registry.get_method(name)
    except KeyError as e:
        raise LangmoeError(f"recipe: systems: {e.args[0]}") from None
    shared = recipe.optim.model_dump(exclude_unset=True)
    try:
        return method.config_cls.model_validate(body, context={"optim": shared})
    except ValidationError as e:
        raise LangmoeError(error_line(e, "recipe", loc_prefix=f"systems.{name}")) from None


def _resolve_systems(recipe: Recipe) -> list[SystemEntry]:
    out = []
    for i, entry in enumerate(recipe.systems):
        if isinstance(entry, SystemEntry):
            out.append(entry)
            continue
        if isinstance(entry, str):
            name, body = entry, {}
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
            name, body = entry["name"], {k: v for k, v in entry.items() if k != "name"}
        else:
            raise LangmoeError(f"recipe: systems.{i}: give a method name or a mapping with `name:` "
                               f"(e.g. systems: [base, {{name: dmoe, num_groups: 3}}, cpt])")
        out.append(SystemEntry(name, _method_settings(recipe, name, body)))
    return out


def parse_recipe(data: dict[str, Any] | Recipe) -> Recipe:
    """Validate a recipe dict; any problem raises LangmoeError naming the field (one line)."""
    if isinstance(data, Recipe):
        return data
    if not isinstance(data, dict):
        raise LangmoeError("a recipe must be a YAML mapping of fields (see recipes/dmoe.yaml)")
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise LangmoeError(error_line(e, "recipe")) from None


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read and validate a recipe YAML file; `overrides` replace top-level fields."""
    p = Path(path)
    if not p.is_file():
        raise LangmoeError(f"recipe {p} does not exist: give a YAML file (see recipes/dmoe.yaml)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise LangmoeError(f"recipe {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise LangmoeError(f"recipe {p} is not UTF-8 text: save it as UTF-8") from None
    if isinstance(data, dict) and overrides:
        data = {**data, **overrides}
    return parse_recipe(data)


def builtin_recipe_path(name: str = "demo") -> Path:
    """A recipe shipped inside the package (`langmoe/recipes/<name>.yaml`)."""
    p = Path(__file__).resolve().parent / "recipes" / f"{name}.yaml"
    if not p.is_file():
        raise LangmoeError(f"no built-in recipe {name!r} at {p}: reinstall langmoe")
    return p

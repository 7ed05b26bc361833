"""One place that turns pydantic's validation report into the one-line `LangmoeError` users see.

Every typed config (recipes, method settings, trainer configs, CLI flags) validates through `validate`, so a bad
field always reads `<context>: <field.path>: <what is wrong>` on one line.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from langmoe.errors import LangmoeError

M = TypeVar("M", bound=BaseModel)


def error_line(e: ValidationError, context: str = "", default_loc: str = "", loc_prefix: str = "") -> str:
    """`context: loc: msg` for the first error of `e` (pydantic's "Value error, " prefix removed)."""
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    loc = (f"{loc_prefix}.{loc}" if loc else loc_prefix) if loc_prefix else loc
    loc = loc or default_loc
    msg = " ".join(str(err.get("msg", e)).removeprefix("Value error, ").split())
    if err.get("type") in ("literal_error", "enum") and isinstance(err.get("input"), str | int | float):
        msg += f", got {err['input']!r}"  # a wrong name: say which one was given beside the valid ones
    body = f"{loc}: {msg}" if loc else msg
    return f"{context}: {body}" if context else body


def validate(cls: type[M], data: Any, context: str = "", default_loc: str = "", loc_prefix: str = "") -> M:
    """`cls.model_validate(data)`, any problem raised as a one-line LangmoeError (see `error_line`)."""
    if isinstance(data, cls):
        return data
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise LangmoeError(error_line(e, context, default_loc, loc_prefix)) from None

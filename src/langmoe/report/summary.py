"""A run folder's `summary.json` as the report reads it: checked once, so that a damaged file is one line naming
the file and the field (not a traceback, nor a report whose damage shows only inside the HTML).

The writer is `langmoe.pipeline.run` (rows from `langmoe.pipeline.summary.summary_row`); fields the report does
not use are kept as they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from langmoe.errors import LangmoeError
from langmoe.validation import error_line

_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}
_FIX = "re-run `langmoe run` to rewrite it, or move it away (the report then uses eval/*.json)"


class SystemRow(BaseModel):
    """One system's row: the means the Systems table shows, and the optional counts beside them."""

    model_config = ConfigDict(extra="allow", strict=True)

    mean_ppl: float | None
    mean_bpb: float | None
    params_total: int | None = None
    params_active: int | None = None
    tokens_seen: int | None = None
    routing_accuracy: dict[str, float] | float | None = None


class RunSummary(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    systems: dict[str, SystemRow]
    budget_tokens: int | None = None
    note: str | None = None
    languages: list[str] | None = None
    display: dict[str, dict[str, Any]] | None = Field(default=None)


def load_summary(path: str | Path) -> dict[str, Any] | None:
    """The summary as written (a dict), None when there is none; LangmoeError when it is damaged."""
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_file():
        raise LangmoeError(f"{path} is not a file: {_FIX}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise LangmoeError(f"{path} is not UTF-8 text: {_FIX}") from None
    except json.JSONDecodeError as e:
        raise LangmoeError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}): {_FIX}") from None
    if not isinstance(data, dict):
        kind = _JSON_KINDS.get(type(data), type(data).__name__)
        raise LangmoeError(f"{path} holds a JSON {kind}, not an object with 'systems': {_FIX}")
    try:
        RunSummary.model_validate(data)
    except ValidationError as e:
        raise LangmoeError(f"{error_line(e, str(path))}: {_FIX}") from None
    return data

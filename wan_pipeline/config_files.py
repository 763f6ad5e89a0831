"""Loading YAML/JSON documents and turning pydantic errors into messages a person can act on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from wan_pipeline.errors import InputError


def load_document(path: str | Path) -> Any:
    """Parse a YAML (``.yaml``/``.yml``) or JSON (``.json``) file.

    Raises :class:`InputError` naming the file, and the line and column of a syntax error.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "file not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(str(path), f"JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise InputError(str(path), f"unsupported file type {path.suffix!r}: use .yaml, .yml or .json")
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise InputError(str(path), f"YAML syntax error at {where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise InputError(str(path), f"YAML syntax error: {exc}") from None


def field_path(loc: tuple) -> str:
    """``('scenes', 2, 'keyframe', 'image')`` → ``'scenes[2].keyframe.image'``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _allowed_fields(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """Follow ``loc`` through nested pydantic models and return the allowed field names there."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fld = getattr(current, "model_fields", {}).get(part)
        if fld is None:
            return None
        ann = fld.annotation
        for arg in getattr(ann, "__args__", None) or (ann,):
            inner = getattr(arg, "__args__", None)
            candidates = (arg,) + tuple(inner or ())
            found = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
            if found is not None:
                current = found
                break
        else:
            return None
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else None


def validation_problems(model: type[BaseModel], err: ValidationError) -> list[str]:
    """One line per pydantic error: ``field.path: message (allowed: ...)``."""
    problems = []
    for e in err.errors():
        loc = tuple(e["loc"])
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if e["type"] == "extra_forbidden":
            allowed = _allowed_fields(model, loc)
            msg = "unknown field" + (f"; allowed fields here: {', '.join(allowed)}" if allowed else "")
        elif e["type"] == "missing":
            msg = "required field is missing"
        problems.append(f"{field_path(loc)}: {msg}")
    return problems

"""Loading YAML/JSON documents and turning pydantic errors into messages a person can act on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from wan_pipeline.errors import InputError

#: Largest story or preset file read (bytes): far above any real one, so a wrong file (a video, a
#: log) is refused before it is parsed.
MAX_FILE_BYTES = 10 * 1024 * 1024
#: Deepest nesting of mappings and lists accepted; a story is 4 levels deep (story → scenes →
#: scene → keyframe/loras), a preset 3. Deeper documents are refused before validation (Python's
#: parsers and validators recurse and would overflow the stack at a few thousand levels).
MAX_DEPTH = 32


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    keeps the last value silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:
                    continue  # an unhashable key: the base class reports it
                if first is not key_node.start_mark:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {key!r} is given twice (first at line {first.line + 1}); remove one of them",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


def _decode(path: Path, data: bytes) -> str:
    """The file's text; UTF-8 (a BOM is allowed) or :class:`InputError` saying how to fix it."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(str(path), "the file is UTF-16 text; save it as UTF-8 (every editor has this under 'Save as … encoding')")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            str(path),
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line} is not valid UTF-8; "
            "Latin-1/Windows-1252 files look like this): save the file as UTF-8",
        ) from None
    if "\x00" in text:
        raise InputError(str(path), "the file contains NUL bytes: it is not a text file (or is UTF-16/32); save it as UTF-8")
    return text


def _depth_problem(data: Any) -> str | None:
    """A message when ``data`` nests mappings/lists deeper than :data:`MAX_DEPTH` (iterative walk)."""
    stack = [(data, 1)]
    seen: dict[int, int] = {}  # YAML aliases share nodes: visit each again only when deeper
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list | tuple):
            if seen.get(id(node), 0) >= depth:
                continue
            seen[id(node)] = depth
            if depth > MAX_DEPTH:
                return f"nested more than {MAX_DEPTH} levels deep: this is not a story or preset file"
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return None


def _json_object(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} is given twice in one object; remove one of them")
        out[key] = value
    return out


def load_document(path: str | Path) -> Any:
    """Parse a YAML (``.yaml``/``.yml``) or JSON (``.json``) file (UTF-8).

    Raises :class:`InputError` naming the file and the fix: missing or unreadable, not UTF-8,
    over :data:`MAX_FILE_BYTES`, a syntax error (line and column), a key given twice, or nesting
    deeper than :data:`MAX_DEPTH`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "file not found" if not path.exists() else "not a regular file: give a .yaml, .yml or .json file")
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise InputError(str(path), f"unsupported file type {path.suffix!r}: use .yaml, .yml or .json")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InputError(str(path), f"cannot be read ({exc.strerror or exc}): check its permissions") from None
    if len(data) > MAX_FILE_BYTES:
        raise InputError(str(path), f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB: this is not a story or preset file")
    text = _decode(path, data)
    try:
        if suffix == ".json":
            doc = json.loads(text, object_pairs_hook=_json_object)
        else:
            doc = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except json.JSONDecodeError as exc:
        raise InputError(str(path), f"JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except ValueError as exc:  # a duplicate JSON key (_json_object), an impossible YAML date
        raise InputError(str(path), f"{'JSON' if suffix == '.json' else 'YAML'} error: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        kind = "YAML error" if isinstance(exc, yaml.constructor.ConstructorError) else "YAML syntax error"
        raise InputError(str(path), f"{kind} at {where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise InputError(str(path), f"YAML syntax error: {exc}") from None
    except RecursionError:
        raise InputError(str(path), f"nested more than {MAX_DEPTH} levels deep: this is not a story or preset file") from None
    problem = _depth_problem(doc)
    if problem:
        raise InputError(str(path), problem)
    return doc


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
    # fields set by the loader, never written in a file (``exclude=True``, e.g. ``source_path``)
    return sorted(name for name, f in fields.items() if not f.exclude) if fields else None


def validation_problems(model: type[BaseModel], err: ValidationError) -> list[str]:
    """One line per pydantic error: ``field.path: message (allowed: ...)``.

    Pydantic's wording is kept except where it misleads: unknown fields list the allowed ones
    (not the loader-set ``exclude`` fields), NaN/infinity says "not a number", a YAML ``true``
    where a number belongs says so.
    """
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
        elif e["type"] == "finite_number":
            msg = "not a number (NaN or infinity): give a finite number"
        elif e["type"] in ("float_type", "int_type") and isinstance(e.get("input"), bool):
            kind = "a whole number" if e["type"] == "int_type" else "a number"
            msg = f"must be {kind}, not {str(e['input']).lower()}"
        problems.append(f"{field_path(loc)}: {msg}")
    return problems

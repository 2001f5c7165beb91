"""The reference part of `docs/api.md`, generated from the code so that it cannot drift.

Four tables are written between `<!-- reference:NAME -->` and `<!-- /reference:NAME -->` markers:
`endpoints` (from the app's OpenAPI document), `problems` (every `RequestError` the service can
answer), `settings` (every `XRAY_` variable, from `Settings`) and `manifest` (every field of
`manifest.json`, from its JSON Schema). The prose around them is written by hand.

    python -m service.api.reference docs/api.md           # rewrite the tables
    python -m service.api.reference --check docs/api.md   # exit 1 when they are stale
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from service.core.config import Settings
from xray.contract.errors import RequestError
from xray.contract.manifest import Manifest

logger = logging.getLogger(__name__)

_BLOCK = re.compile(r"(<!-- reference:(?P<name>[a-z]+) -->\n).*?(<!-- /reference:(?P=name) -->)", re.DOTALL)


def _cell(text: object) -> str:
    """One Markdown table cell: a single line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def endpoints() -> str:
    """Every operation of the OpenAPI document: what it does, whether it needs the key, its answers."""
    from service.api.app import create_app

    document = create_app(Settings(api_key=None)).openapi()
    rows = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            parameters = ", ".join(f"`{item['name']}`" for item in operation.get("parameters", []))
            rows.append(
                (
                    f"`{method.upper()} {path}`",
                    operation.get("summary", ""),
                    parameters or "—",
                    "API key, if set" if operation.get("security") else "none",
                    ", ".join(sorted(operation.get("responses", {}))),
                )
            )
    return _table(("operation", "what", "query and path parameters", "auth", "statuses"), rows)


def _subclasses(base: type[RequestError]) -> Iterator[type[RequestError]]:
    for subclass in base.__subclasses__():
        yield subclass
        yield from _subclasses(subclass)


def problems() -> str:
    """Every problem type the service answers, from the `RequestError` classes."""
    import service.api.app  # noqa: F401  # imports every module that defines an error

    rows = sorted(
        {
            (error.status, f"`{error.slug}`", error.title, (error.__doc__ or "").strip().splitlines()[0])
            for error in _subclasses(RequestError)
        }
    )
    return _table(("status", "type (after `urn:xray-triage:problem:`)", "title", "when"), rows)


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, Path):
            return "the repository's `models/`"
        return f"`{','.join(value)}`" if isinstance(value, list) and value else "empty"
    if field.default is None:
        return "unset"
    if isinstance(field.default, bool):
        return f"`{str(field.default).lower()}`"
    return f"`{field.default}`"


def _bounds(metadata: Sequence[Any]) -> str:
    symbols = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}
    found = [
        f"{symbol} {getattr(item, name)}"
        for item in metadata
        for name, symbol in symbols.items()
        if getattr(item, name, None) is not None
    ]
    return ", ".join(found) or "—"


def settings() -> str:
    """Every `XRAY_` variable: default, allowed range, meaning."""
    rows = [
        (f"`XRAY_{name.upper()}`", _default(field), _bounds(field.metadata), field.description or "")
        for name, field in Settings.model_fields.items()
    ]
    return _table(("variable", "default", "range", "meaning"), rows)


def _schema_type(schema: dict[str, Any], definitions: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        kinds = [_schema_type(option, definitions) for option in schema["anyOf"]]
        return " or ".join(kind for kind in kinds if kind != "null") + (" or null" if "null" in kinds else "")
    if "enum" in schema:
        return " or ".join(json.dumps(value) for value in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    if schema.get("type") == "array":
        if "prefixItems" in schema:
            return "[" + ", ".join(_schema_type(item, definitions) for item in schema["prefixItems"]) + "]"
        return f"array of {_schema_type(schema.get('items', {}), definitions)}"
    return str(schema.get("type", "any"))


def _constraints(schema: dict[str, Any]) -> str:
    names = {
        "exclusiveMinimum": ">",
        "minimum": "≥",
        "exclusiveMaximum": "<",
        "maximum": "≤",
        "minLength": "length ≥",
        "minItems": "items ≥",
        "pattern": "matches",
    }
    return ", ".join(f"{label} `{schema[key]}`" for key, label in names.items() if key in schema)


def _walk(
    model: dict[str, Any], prefix: str, definitions: dict[str, Any], seen: frozenset[str]
) -> Iterator[tuple[str, ...]]:
    required = set(model.get("required", ()))
    for name, schema in model.get("properties", {}).items():
        path = f"{prefix}{name}"
        default = f"`{json.dumps(schema['default'])}`" if "default" in schema else ""
        yield (
            f"`{path}`",
            _schema_type(schema, definitions),
            "yes" if name in required else default or "no",
            _constraints(schema) or "—",
            schema.get("description", ""),
        )
        # Descend into a nested object (directly, in a list, or optional), once per definition.
        inner = "[]" if schema.get("type") == "array" else ""
        for target in (schema, schema.get("items", {}), *schema.get("anyOf", ())):
            definition = target.get("$ref", "").rsplit("/", 1)[-1]
            if definition and definition not in seen:
                yield from _walk(definitions[definition], f"{path}{inner}.", definitions, seen | {definition})


def manifest() -> str:
    """Every field of `manifest.json`, from the JSON Schema the service validates it against."""
    schema = Manifest.model_json_schema()
    rows = list(_walk(schema, "", schema.get("$defs", {}), frozenset()))
    return _table(("field", "type", "required (or default)", "constraints", "meaning"), rows)


#: Block name → what writes it.
TABLES: dict[str, Callable[[], str]] = {
    "endpoints": endpoints,
    "problems": problems,
    "settings": settings,
    "manifest": manifest,
}


def render(text: str) -> str:
    """`text` with every reference block rewritten from the code.

    Raises:
        ValueError: A block names no known table, or a table has no block.
    """
    found: set[str] = set()

    def fill(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in TABLES:
            raise ValueError(f"unknown reference block {name!r}; known: {sorted(TABLES)}")
        found.add(name)
        return match.group(1) + TABLES[name]() + match.group(3)

    rendered = _BLOCK.sub(fill, text)
    missing = sorted(set(TABLES) - found)
    if missing:
        raise ValueError(f"no block for {missing}: add <!-- reference:NAME --> … <!-- /reference:NAME -->")
    return rendered


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite (or with --check, verify) the reference tables of a Markdown file."""
    parser = argparse.ArgumentParser(prog="python -m service.api.reference", description=__doc__)
    parser.add_argument("file", type=Path, help="the Markdown file, e.g. docs/api.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if the tables are stale")
    args = parser.parse_args(argv)
    text = args.file.read_text(encoding="utf-8")
    rendered = render(text)
    if args.check:
        if rendered != text:
            logger.error("%s: its reference tables are stale; run python -m service.api.reference", args.file)
            return 1
        return 0
    args.file.write_text(rendered, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Prints the settings of every service as Markdown tables, read from the settings classes.

    .venv/bin/python deploy/settings_table.py           # print the tables
    .venv/bin/python deploy/settings_table.py --write   # replace them in docs/configuration.md

Meanings come from each field's description, else from the comment lines just above it in the
class, so the table says what the code says."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from cef_common.settings import BaseServiceSettings

SERVICES = (
    ("tokeniser", "cef_tokeniser.config"),
    ("cef-api", "cef_api.config"),
    ("audit", "cef_audit.config"),
    ("web", "cef_web.config"),
)


def field_comments(cls: type) -> dict[str, str]:
    """The comment block right above each annotated field of `cls` (its own source only)."""
    try:
        lines, _ = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return {}
    source = textwrap.dedent("".join(lines))
    body = source.splitlines()
    comments: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            block: list[str] = []
            i = node.lineno - 2
            while i >= 0 and body[i].strip().startswith("#"):
                block.insert(0, body[i].strip().lstrip("#").strip())
                i -= 1
            if block:
                comments[node.target.id] = " ".join(block)
    return comments


def meaning(cls: type, name: str, field: FieldInfo) -> str:
    if field.description:
        return field.description
    for klass in cls.__mro__:
        if name in getattr(klass, "__annotations__", {}):
            text = field_comments(klass).get(name)
            if text:
                return text
    return ""


def render_type(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    if text is None:
        text = str(annotation)
    text = re.sub(r"\b(typing|pathlib|pydantic\.types|cef_common\.settings)\.", "", text)
    text = text.replace("NoneType", "None")
    return text


def render_default(field: FieldInfo) -> str:
    if field.is_required():
        return "(required)"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if value is PydanticUndefined or value is None:
        return "—"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def describe(cls: type, name: str, field: FieldInfo) -> tuple[str, str, str]:
    return render_type(field.annotation), render_default(field), meaning(cls, name, field)


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows: list[tuple[str, str, str, str]]) -> str:
    out = ["| Variable | Type | Default | Meaning |", "|---|---|---|---|"]
    out += [f"| `{v}` | `{cell(t)}` | `{cell(d)}` | {cell(m)} |" for v, t, d, m in rows]
    return "\n".join(out)


def render() -> str:
    classes = [(name, importlib.import_module(module).Settings) for name, module in SERVICES]
    base_fields = BaseServiceSettings.model_fields
    shared = base_fields.items()
    parts = [
        "### Every service",
        "",
        "Each variable takes the service's prefix: "
        + ", ".join(f"`{cls.model_config.get('env_prefix')}` ({name})" for name, cls in classes)
        + ". Lists and objects are JSON. Where a service changes a default, its own table says so.",
        "",
        table([(f"<PREFIX>{n.upper()}", *describe(BaseServiceSettings, n, f)) for n, f in shared]),
    ]
    for name, cls in classes:
        prefix = cls.model_config.get("env_prefix", "")
        rows = []
        for n, f in cls.model_fields.items():
            inherited = n in base_fields
            if inherited and render_default(f) == render_default(base_fields[n]):
                continue
            kind, default, what = describe(cls, n, f)
            note = "As for every service; this service's default."
            # A description may already say so itself (the web app's MAX_BODY_BYTES does).
            if inherited and not what.startswith(note):
                what = f"{note} {what}".strip()
            rows.append((f"{prefix}{n.upper()}", kind, default, what))
        parts += ["", f"### {name} (`{prefix}`)", "", table(rows)]
    return "\n".join(parts) + "\n"


DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def replace_in(document: str, tables: str) -> str:
    """`document` with the text between the markers replaced by `tables`."""
    head, start, rest = document.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise ValueError(f"{DOC} has lost its markers {START} and {END}")
    return f"{head}{START}\n{tables}{END}{tail}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        DOC.write_text(replace_in(DOC.read_text(), render()))
    else:
        sys.stdout.write(render())

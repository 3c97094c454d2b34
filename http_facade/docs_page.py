"""The API's documentation as one self-contained HTML page, rendered from the OpenAPI document.

No script, no CDN, no font: the page is plain HTML with one inline style block, so it
works offline and under a Content-Security-Policy that allows nothing else. It lists every
operation (parameters, request body, responses with their headers) and every schema;
references between them are links within the page. Every string that comes from the
document is escaped; backquoted text in descriptions becomes ``<code>``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

Json = Mapping[str, Any]

DOCS_STYLE: Final = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; color: #1d1d1f; }
h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; }
h3 { margin-top: 1.5rem; }
code { font: 13px ui-monospace, monospace; background: #f3f3f3; padding: 0 .2em; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0; }
th, td { border: 1px solid #ddd; padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #fafafa; }
.method { font-weight: bold; text-transform: uppercase; }
.op { border-left: 4px solid #ccc; padding-left: 1rem; margin: 1.5rem 0; }
"""

_HTTP_METHODS: Final = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_REF_PREFIX: Final = "#/components/"
# Longer enums (currencies) fold away behind a <details>.
_INLINE_ENUM_VALUES: Final = 12
_CODE_SPAN: Final = re.compile(r"`([^`]+)`")


def render_docs_page(document: Json) -> str:
    info = document["info"]
    title = f"{info['title']} API {info['version']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{DOCS_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p>{_text(info.get('summary', ''))}</p>",
        _paragraphs(info.get("description", "")),
        '<p>The machine-readable description: <a href="/openapi.json">/openapi.json</a> '
        f"(OpenAPI {_e(document['openapi'])}).</p>",
        _authentication(document),
        "<h2>Operations</h2><ul>",
        *(
            f'<li><a href="#{_anchor(method, path)}"><span class="method">{_e(method)}</span> '
            f"<code>{_e(path)}</code></a>: {_text(op.get('summary', ''))}</li>"
            for path, method, op in _operations(document)
        ),
        "</ul>",
        *(_operation(document, path, method, op) for path, method, op in _operations(document)),
        "<h2>Schemas</h2>",
        *(
            _schema_section(name, schema)
            for name, schema in document["components"]["schemas"].items()
        ),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _operations(document: Json) -> Iterator[tuple[str, str, Json]]:
    for path, item in document["paths"].items():
        for method in _HTTP_METHODS:
            if method in item:
                yield path, method, item[method]


def _authentication(document: Json) -> str:
    rows = [
        f"<li><code>{_e(name)}</code>: HTTP {_e(scheme.get('scheme', scheme['type']))}"
        f" ({_text(scheme.get('bearerFormat', ''))}). {_text(scheme.get('description', ''))}</li>"
        for name, scheme in document["components"]["securitySchemes"].items()
    ]
    return "<h2>Authentication</h2><ul>" + "".join(rows) + "</ul>"


def _operation(document: Json, path: str, method: str, op: Json) -> str:
    item = document["paths"][path]
    security = op.get("security", document.get("security", []))
    parameters = [
        _resolve(document, p) for p in [*item.get("parameters", ()), *op.get("parameters", ())]
    ]
    parts = [
        f'<section class="op" id="{_anchor(method, path)}">',
        f'<h2><span class="method">{_e(method)}</span> <code>{_e(path)}</code></h2>',
        f"<p><strong>{_text(op.get('summary', ''))}</strong></p>",
        _paragraphs(op.get("description", "")),
        "<p>API key: " + ("required" if security else "none (public)") + "</p>",
    ]
    if parameters:
        parts.append(
            "<h3>Parameters</h3><table><tr><th>name</th><th>in</th><th>required</th>"
            "<th>schema</th><th>description</th></tr>"
        )
        parts.extend(
            f"<tr><td><code>{_e(p['name'])}</code></td><td>{_e(p['in'])}</td>"
            f"<td>{'yes' if p.get('required') else 'no'}</td>"
            f"<td>{_describe(p['schema'])}</td><td>{_text(p.get('description', ''))}</td></tr>"
            for p in parameters
        )
        parts.append("</table>")
    if "requestBody" in op:
        body = op["requestBody"]
        required = "required" if body.get("required") else "optional"
        parts.append(f"<h3>Request body ({required})</h3>")
        if "description" in body:
            parts.append(f"<p>{_text(body['description'])}</p>")
        parts.extend(_content(body["content"]))
    parts.append("<h3>Responses</h3>")
    for status, response in op["responses"].items():
        parts.append(_response(document, status, response))
    parts.append("</section>")
    return "\n".join(parts)


def _response(document: Json, status: str, response: Json) -> str:
    name = ""
    if "$ref" in response:
        name = f" ({_e(_ref_name(response['$ref']))})"
        response = _resolve(document, response)
    parts = [
        f"<h4><code>{_e(status)}</code>{name}</h4>",
        f"<p>{_text(response['description'])}</p>",
    ]
    headers = {n: _resolve(document, h) for n, h in response.get("headers", {}).items()}
    if headers:
        parts.append("<p>Headers: ")
        parts.append(
            ", ".join(
                f"<code>{_e(n)}</code>{'' if h.get('required') else ' (when it applies)'}"
                for n, h in headers.items()
            )
        )
        parts.append("</p>")
    parts.extend(_content(response.get("content", {})))
    return "\n".join(parts)


def _content(content: Json) -> Iterator[str]:
    for media_type, media in content.items():
        yield f"<p><code>{_e(media_type)}</code>: {_describe(media['schema'])}</p>"


def _schema_section(name: str, schema: Json) -> str:
    parts = [f'<h3 id="schema-{_e(name)}">{_e(name)}</h3>']
    if "description" in schema:
        parts.append(f"<p>{_text(schema['description'])}</p>")
    if "properties" in schema:
        parts.append(_fields(schema))
    else:
        parts.append(f"<p>{_describe(schema)}</p>")
    return "\n".join(parts)


def _fields(schema: Json) -> str:
    required = set(schema.get("required", ()))
    rows = [
        f"<tr><td><code>{_e(field)}</code></td><td>{'yes' if field in required else 'no'}</td>"
        f"<td>{_describe(sub)}</td><td>{_text(sub.get('description', ''))}</td></tr>"
        for field, sub in schema["properties"].items()
    ]
    closed = schema.get("additionalProperties") is False
    note = "<p>No other fields are accepted.</p>" if closed else ""
    return (
        "<table><tr><th>field</th><th>required</th><th>schema</th><th>description</th></tr>"
        + "".join(rows)
        + "</table>"
        + note
    )


def _describe(schema: Json) -> str:
    """A one-line, linked description of a schema: its type and constraints."""
    if "$ref" in schema:
        name = _ref_name(schema["$ref"])
        return f'<a href="#schema-{_e(name)}">{_e(name)}</a>'
    if "allOf" in schema:
        base = " and ".join(_describe(sub) for sub in schema["allOf"])
        codes = schema.get("properties", {}).get("error", {}).get("properties", {}).get("code", {})
        if "enum" in codes:
            return f"{base} with <code>error.code</code> {_values(codes['enum'])}"
        return base
    if "anyOf" in schema:
        return " or ".join(_describe(sub) for sub in schema["anyOf"])
    if "const" in schema:
        return f"<code>{_e(_json_text(schema['const']))}</code>"
    kind = schema.get("type", "any")
    text = " or ".join(kind) if isinstance(kind, list) else str(kind)
    text = _e(text)
    if "enum" in schema:
        text += " " + _values(schema["enum"])
    if "format" in schema:
        text += f" ({_e(schema['format'])})"
    if "pattern" in schema:
        text += f" matching <code>{_e(schema['pattern'])}</code>"
    text += _bounds(schema)
    if "items" in schema:
        text += " of " + _describe(schema["items"])
    if "properties" in schema:
        text += _fields(schema)
    elif isinstance(schema.get("additionalProperties"), Mapping):
        text += " of " + _describe(schema["additionalProperties"]) + " values"
    if "default" in schema:
        text += f", default <code>{_e(_json_text(schema['default']))}</code>"
    return text


def _bounds(schema: Json) -> str:
    labels = (
        ("minimum", "at least"),
        ("maximum", "at most"),
        ("maxLength", "at most {} characters"),
        ("maxProperties", "at most {} entries"),
    )
    found = [
        label.format(schema[key]) if "{}" in label else f"{label} {schema[key]}"
        for key, label in labels
        if key in schema
    ]
    return ", " + ", ".join(found) if found else ""


def _values(values: Sequence[object]) -> str:
    items = ", ".join(f"<code>{_e(_json_text(v))}</code>" for v in values)
    if len(values) <= _INLINE_ENUM_VALUES:
        return f"one of {items}"
    return f"<details><summary>one of {len(values)} values</summary>{items}</details>"


def _resolve(document: Json, node: Json) -> Json:
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _ref_name(ref: str) -> str:
    if not ref.startswith(_REF_PREFIX):
        raise ValueError(f"only local component references are rendered, got {ref!r}")
    return ref.rsplit("/", 1)[1]


def _anchor(method: str, path: str) -> str:
    return method + re.sub(r"[^A-Za-z0-9]+", "-", path).rstrip("-")


def _json_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _paragraphs(text: str) -> str:
    return "".join(f"<p>{_text(block)}</p>" for block in text.split("\n\n") if block.strip())


def _text(text: str) -> str:
    """Escaped prose, with `backquoted` spans as code."""
    return _CODE_SPAN.sub(r"<code>\1</code>", _e(text))


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)

"""What a person meets on the /docs page, read from the OpenAPI document: the order in which Swagger UI
lists the operations, and the first example it pre-fills when they press "Try it out".

Swagger UI groups operations by tag, in the order of the document's top-level ``tags`` (tags it
does not list follow, then untagged operations under "default"); within a tag it keeps the
document's order of paths, and of methods within a path. The browser test checks this order
against the rendered page. A media type's own ``example`` or named ``examples`` win over the
schema's ``examples``, and parameters show their defaults, as in Swagger UI's "Try it out".
"""

from __future__ import annotations

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
NO_EXAMPLE = object()


def page_order(spec: dict) -> list[tuple[str, str, dict]]:
    """(method, path, operation) in the order the Swagger UI page lists them."""
    by_tag: dict[str, list[tuple[str, str, dict]]] = {tag["name"]: [] for tag in spec.get("tags", [])}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            for tag in operation.get("tags") or ["default"]:
                by_tag.setdefault(tag, []).append((method, path, operation))
    untagged = by_tag.pop("default", [])
    return [entry for entries in by_tag.values() for entry in entries] + untagged


def resolve(spec: dict, node: dict) -> dict:
    """Follow a local ``$ref`` ("#/components/schemas/X") to what it names."""
    while isinstance(node, dict) and "$ref" in node:
        target = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def first_example(spec: dict, holder: dict):
    """The value pre-filled for a media type or a parameter: its own ``example``, the first of its
    named ``examples``, else what its schema offers (``schema_example``); NO_EXAMPLE if nothing."""
    if "example" in holder:
        return holder["example"]
    if holder.get("examples"):
        named = resolve(spec, next(iter(holder["examples"].values())))
        if "value" in named:
            return named["value"]
    return schema_example(spec, holder.get("schema", {}))


def schema_example(spec: dict, schema: dict):
    """A schema's first ``examples`` entry, its ``example``, or its ``default`` (parameters show it);
    for ``anyOf`` / ``oneOf`` / ``allOf``, that of the first member that has one."""
    schema = resolve(spec, schema)
    if schema.get("examples"):
        return schema["examples"][0]
    for key in ("example", "default"):
        if key in schema:
            return schema[key]
    for key in ("anyOf", "oneOf", "allOf"):
        for member in schema.get(key, []):
            found = schema_example(spec, member)
            if found is not NO_EXAMPLE:
                return found
    return NO_EXAMPLE


def operation_label(method: str, path: str) -> str:
    return f"{method.upper()} {path}"

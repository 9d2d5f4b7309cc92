"""Whether a payload schema still serves the consumers of a released one.

Both directions matter on a topic: analysts' jobs written against the released schema read what the
new model writes (so no field may disappear or change type), and the services, like any job that
replays a topic from the beginning, read records the released model wrote (so no new field may be
required, and no type, enum or range may narrow). Documentation (titles, descriptions, examples,
defaults' values) may change freely; adding an optional field is always fine, and so is an enum
gaining a value — analysts are told to expect new values.

Only the subset of JSON Schema that pydantic generates is understood: local `$ref`s, `anyOf`/`oneOf`
unions, objects with `properties`/`required`, arrays with `items`, `enum`/`const`, and the numeric,
length and pattern constraints.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

JsonDict = dict[str, Any]

_LOWER_BOUNDS = (("minimum", 0), ("exclusiveMinimum", 1))
_UPPER_BOUNDS = (("maximum", 0), ("exclusiveMaximum", -1))
_MIN_SIZES = ("minLength", "minItems")
_MAX_SIZES = ("maxLength", "maxItems")


@dataclass(frozen=True)
class Break:
    """One change that would break a consumer: the field's path (`lines[].sku`) and what happened."""

    field: str
    problem: str

    def __str__(self) -> str:
        return f"field `{self.field or '(the payload)'}` {self.problem}"


def breaking_changes(released: JsonDict, current: JsonDict) -> list[Break]:
    """Every change from the released payload schema to the current one that breaks a consumer."""
    return _Comparison(released, current).compare(released, current, "")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class _Schema:
    """One side of the comparison: a root schema whose local `$ref`s can be followed."""

    def __init__(self, root: JsonDict) -> None:
        self.root = root

    def resolve(self, schema: JsonDict) -> JsonDict:
        """`schema` with its `$ref` replaced by the target (sibling keywords such as `default` kept)."""
        seen: set[str] = set()
        while "$ref" in schema:
            ref = schema["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#/"):
                raise ValueError(f"only local references can be compared, not {ref!r}")
            if ref in seen:
                raise ValueError(f"reference cycle at {ref}")
            seen.add(ref)
            target: Any = self.root
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            siblings = {key: value for key, value in schema.items() if key != "$ref"}
            schema = {**target, **siblings}
        return schema

    def branches(self, schema: JsonDict) -> Iterator[JsonDict]:
        """The alternatives a value may take: a union's members (flattened), each single-typed."""
        schema = self.resolve(schema)
        union = schema.get("anyOf", schema.get("oneOf"))
        if isinstance(union, list):
            for member in union:
                yield from self.branches(member)
            return
        declared = schema.get("type")
        if isinstance(declared, list):
            for one in declared:
                yield {**schema, "type": one}
        else:
            yield schema

    def groups(self, schema: JsonDict) -> dict[str, JsonDict]:
        """The alternatives by JSON type; alternatives of one type merged (string enums pooled)."""
        by_kind: dict[str, list[JsonDict]] = {}
        for branch in self.branches(schema):
            by_kind.setdefault(_kind(branch), []).append(branch)
        merged: dict[str, JsonDict] = {}
        for kind, members in by_kind.items():
            if kind == "object" and len(members) > 1:
                for member in members:
                    merged[f"object {member.get('title', '')}".strip()] = member
            elif len(members) == 1:
                merged[kind] = members[0]
            else:
                merged[kind] = _pooled(kind, members)
        return merged


def _kind(schema: JsonDict) -> str:
    if "type" in schema:
        return str(schema["type"])
    values = _allowed_values(schema)
    if values:
        kinds = {_json_type(value) for value in values}
        return kinds.pop() if len(kinds) == 1 else "any"
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "any"


def _allowed_values(schema: JsonDict) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    if "enum" in schema:
        return list(schema["enum"])
    return None


def _pooled(kind: str, members: list[JsonDict]) -> JsonDict:
    """Several alternatives of one scalar type as one: any value any of them allows."""
    values: list[Any] = []
    for member in members:
        allowed = _allowed_values(member)
        if allowed is None:
            return {"type": kind}
        values.extend(value for value in allowed if value not in values)
    return {"type": kind, "enum": values}


def _describe(groups: dict[str, JsonDict]) -> str:
    return " | ".join(sorted(groups)) or "nothing"


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class _Comparison:
    def __init__(self, released: JsonDict, current: JsonDict) -> None:
        self.old = _Schema(released)
        self.new = _Schema(current)

    def compare(self, old: JsonDict, new: JsonDict, path: str) -> list[Break]:
        old_groups, new_groups = self.old.groups(old), self.new.groups(new)
        if set(old_groups) != set(new_groups):
            return [Break(path, f"retyped from {_describe(old_groups)} to {_describe(new_groups)}")]
        breaks: list[Break] = []
        for kind, old_branch in old_groups.items():
            breaks.extend(self._compare_branch(old_branch, new_groups[kind], path))
        return breaks

    def _compare_branch(self, old: JsonDict, new: JsonDict, path: str) -> list[Break]:
        breaks = _narrowed_values(old, new, path) + _narrowed_constraints(old, new, path)
        if "properties" in old or "properties" in new:
            breaks.extend(self._compare_object(old, new, path))
        old_items, new_items = old.get("items"), new.get("items")
        if isinstance(new_items, dict):
            if isinstance(old_items, dict):
                breaks.extend(self.compare(old_items, new_items, f"{path}[]"))
            else:
                breaks.append(Break(f"{path}[]", "narrowed: the items now have a schema"))
        return breaks

    def _compare_object(self, old: JsonDict, new: JsonDict, path: str) -> list[Break]:
        old_fields: JsonDict = old.get("properties", {})
        new_fields: JsonDict = new.get("properties", {})
        old_required = set(old.get("required", []))
        new_required = set(new.get("required", []))
        breaks: list[Break] = []
        for name, old_field in old_fields.items():
            where = _child(path, name)
            if name not in new_fields:
                breaks.append(Break(where, "removed"))
                continue
            if name in new_required and name not in old_required:
                breaks.append(Break(where, "became required: records written without it no longer decode"))
            breaks.extend(self.compare(old_field, new_fields[name], where))
        for name in new_fields.keys() - old_fields.keys():
            if name in new_required:
                breaks.append(Break(_child(path, name), "added as a required field without a default"))
        return breaks


def _narrowed_values(old: JsonDict, new: JsonDict, path: str) -> list[Break]:
    old_values, new_values = _allowed_values(old), _allowed_values(new)
    if new_values is None:
        return []
    if old_values is None:
        return [Break(path, f"narrowed to the values {new_values}")]
    removed = [value for value in old_values if value not in new_values]
    if removed:
        return [Break(path, f"narrowed: its enum lost {removed}")]
    return []


def _lower_bound(schema: JsonDict) -> tuple[float, int] | None:
    """The tightest lower bound; of equal values an exclusive one is the tighter."""
    found = [(float(schema[key]), tie) for key, tie in _LOWER_BOUNDS if key in schema]
    return max(found) if found else None


def _upper_bound(schema: JsonDict) -> tuple[float, int] | None:
    found = [(float(schema[key]), tie) for key, tie in _UPPER_BOUNDS if key in schema]
    return min(found) if found else None


def _narrowed_constraints(old: JsonDict, new: JsonDict, path: str) -> list[Break]:
    breaks: list[Break] = []
    old_lower, new_lower = _lower_bound(old), _lower_bound(new)
    if new_lower is not None and (old_lower is None or new_lower > old_lower):
        breaks.append(
            Break(
                path, f"narrowed: its minimum rose from {_bound_text(old_lower)} to {_bound_text(new_lower)}"
            )
        )
    old_upper, new_upper = _upper_bound(old), _upper_bound(new)
    if new_upper is not None and (old_upper is None or new_upper < old_upper):
        breaks.append(
            Break(
                path, f"narrowed: its maximum fell from {_bound_text(old_upper)} to {_bound_text(new_upper)}"
            )
        )
    for key in _MIN_SIZES:
        if key in new and new[key] > old.get(key, 0):
            breaks.append(Break(path, f"narrowed: {key} rose from {old.get(key, 0)} to {new[key]}"))
    for key in _MAX_SIZES:
        if key in new and (key not in old or new[key] < old[key]):
            breaks.append(Break(path, f"narrowed: {key} fell from {old.get(key, 'none')} to {new[key]}"))
    if "pattern" in new and new["pattern"] != old.get("pattern"):
        breaks.append(Break(path, f"narrowed: its pattern changed to {new['pattern']!r}"))
    return breaks


def _bound_text(bound: tuple[float, int] | None) -> str:
    return "none" if bound is None else f"{bound[0]:g}" + (" (exclusive)" if bound[1] else "")

"""Hypothesis strategies for any protobuf message, from its descriptor.

Every field may be absent or set; values lean to the boundaries (0, -1, the type's limits,
NaN and Infinity, empty and oversized strings, strings stores treat specially, unknown enum
numbers), and messages nest a few levels. Struct fields get JSON-like trees with the same
kind of values. Used by tests/test_fuzz.py on every RPC of both services.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

_F = FieldDescriptor
_INT_LIMITS = {
    _F.TYPE_INT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _F.TYPE_INT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _F.TYPE_UINT32: (0, 2**32 - 1),
    _F.TYPE_FIXED32: (0, 2**32 - 1),
    _F.TYPE_UINT64: (0, 2**64 - 1),
    _F.TYPE_FIXED64: (0, 2**64 - 1),
}
_SPECIAL_STRINGS = [
    "",
    " ",
    "a" * 5000,
    "x" * 40_000,
    "\x00",
    "a\x00b",
    "$set",
    "a.b",
    "../../etc/passwd",
    "01890a5d-ac96-774b-bcce-b302099a8057",
    "ZZZZ",
    "{}",
    "🙂" * 20,
    "\u202e",
]


def _integers(kind: int) -> st.SearchStrategy[int]:
    low, high = _INT_LIMITS[kind]
    edges = sorted({low, high, 0, 1, -1 if low < 0 else 2, 100, 1000, 1001})
    return st.one_of(
        st.sampled_from([e for e in edges if low <= e <= high]), st.integers(low, high)
    )


def _json(depth: int) -> st.SearchStrategy[Any]:
    leaf = st.one_of(
        st.none(),
        st.booleans(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
        st.sampled_from(_SPECIAL_STRINGS[:8]),
    )
    if depth <= 0:
        return leaf
    keys = st.one_of(st.text(max_size=12), st.sampled_from(["$set", "a.b", "", "k\x00", "ok"]))
    return st.one_of(
        leaf,
        st.lists(_json(depth - 1), max_size=3),
        st.dictionaries(keys, _json(depth - 1), max_size=3),
    )


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INT_LIMITS:
        return _integers(kind)
    if kind in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT):
        return st.floats(
            allow_nan=True, allow_infinity=True, width=64 if kind == _F.TYPE_DOUBLE else 32
        )
    if kind == _F.TYPE_BOOL:
        return st.booleans()
    if kind == _F.TYPE_STRING:
        return st.one_of(st.text(max_size=40), st.sampled_from(_SPECIAL_STRINGS))
    if kind == _F.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == _F.TYPE_ENUM:
        assert field.enum_type is not None
        numbers = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(numbers), st.integers(-3, 1000))
    assert field.message_type is not None
    return messages(field.message_type, depth + 1)


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Field values for a message (absent fields left out); `build` makes the message."""
    if descriptor.full_name == "google.protobuf.Struct":
        return st.dictionaries(st.text(max_size=12), _json(3), max_size=4).map(
            lambda d: {"__struct__": d}
        )
    if depth > 3:
        return st.just({})
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
            optional[field.name] = st.dictionaries(
                _value(key, depth), _value(value, depth), max_size=3
            )
        elif field.is_repeated:
            optional[field.name] = st.lists(_value(field, depth), max_size=3)
        else:
            optional[field.name] = _value(field, depth)
    return st.fixed_dictionaries({}, optional=optional)


def build(message: Message, values: dict[str, Any]) -> Message:
    """Fill `message` with `values` from `messages`; returns it."""
    if "__struct__" in values:
        message.update(values["__struct__"])  # type: ignore[attr-defined]
        return message
    for name, value in values.items():
        field = message.DESCRIPTOR.fields_by_name[name]
        target = getattr(message, name)
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            for key, item in value.items():
                if entry.fields_by_name["value"].type == _F.TYPE_MESSAGE:
                    build(target[key], item)
                else:
                    target[key] = item
        elif field.is_repeated:
            for item in value:
                if field.type == _F.TYPE_MESSAGE:
                    build(target.add(), item)
                else:
                    target.append(item)
        elif field.type == _F.TYPE_MESSAGE:
            build(target, value)
            if not value:
                target.SetInParent()
        else:
            setattr(message, name, value)
    return message

"""What every request is checked for before a service sees it: values protobuf accepts on the
wire but that nothing downstream can hold.

- Struct and Value: numbers must be finite (JSON, MongoDB and SQLite's JSON have no NaN or
  Infinity); keys are 1-128 characters without a leading '$', a '.', or control characters
  (MongoDB reads '$x' and 'a.b' as operators and paths, FerretDB refuses NUL); nesting is
  bounded.
- Timestamp: inside 0001-01-01 to 9999-12-31, nanos 0-999,999,999 (what every language's
  conversion accepts).
- Duration: at most 10,000 years either way, nanos within one second and of the seconds'
  sign.

Both services apply it to every request, whatever its message, through the request-check
interceptor: a field added later is covered without anyone remembering to. Each problem is
named by its field path, e.g. `snapshot.userdata["$set"]`.
"""

from __future__ import annotations

import math
import re
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

MAX_DEPTH = 20
MAX_KEY_CHARS = 128
_BAD_KEY = re.compile(r"^\$|\.|[\x00-\x1f\x7f]")
_TS_MIN, _TS_MAX = -62_135_596_800, 253_402_300_799
_DURATION_MAX = 315_576_000_000
_NANOS = 999_999_999

Violations = list[tuple[str, str]]


def valid_key(key: str) -> bool:
    """A Struct key every store takes alike."""
    return 0 < len(key) <= MAX_KEY_CHARS and not _BAD_KEY.search(key)


def violations(message: Message) -> Violations:
    """(field path, what is wrong) for every bad well-known value in `message`."""
    out: Violations = []
    _message(message, "", out)
    # A request that is itself a well-known type (a Duration, say) is named "request".
    return [(path or "request", what) for path, what in out]


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _message(message: Message, path: str, out: Violations) -> None:
    kind = message.DESCRIPTOR.full_name
    if kind == "google.protobuf.Timestamp":
        _timestamp(message, path, out)
    elif kind == "google.protobuf.Duration":
        _duration(message, path, out)
    elif kind == "google.protobuf.Struct":
        _struct(message, path, out, 1)
    elif kind == "google.protobuf.Value":
        _value(message, path, out, 1)
    elif kind == "google.protobuf.ListValue":
        _list(message, path, out, 1)
    else:
        for field, value in message.ListFields():
            entry = field.message_type
            if field.type != FieldDescriptor.TYPE_MESSAGE or entry is None:
                continue
            name = _join(path, field.name)
            if entry.GetOptions().map_entry:
                if entry.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                    for key, item in value.items():
                        _message(item, f"{name}[{key!r}]", out)
            elif field.is_repeated:
                for i, item in enumerate(value):
                    _message(item, f"{name}[{i}]", out)
            else:
                _message(value, name, out)


def _timestamp(ts: Any, path: str, out: Violations) -> None:
    if not _TS_MIN <= ts.seconds <= _TS_MAX or not 0 <= ts.nanos <= _NANOS:
        out.append((path, "must be a time between 0001-01-01 and 9999-12-31"))


def _duration(d: Any, path: str, out: Violations) -> None:
    if not -_DURATION_MAX <= d.seconds <= _DURATION_MAX or not -_NANOS <= d.nanos <= _NANOS:
        out.append((path, "is out of range (at most 10,000 years)"))
    elif (d.seconds > 0 and d.nanos < 0) or (d.seconds < 0 and d.nanos > 0):
        out.append((path, "has seconds and nanos of opposite signs"))


def _struct(struct: Any, path: str, out: Violations, depth: int) -> None:
    if depth > MAX_DEPTH:
        out.append((path, f"nests more than {MAX_DEPTH} levels"))
        return
    for key, value in struct.fields.items():
        where = f"{path}[{key[:40]!r}]"
        if not valid_key(key):
            out.append(
                (
                    where,
                    f"keys must be 1-{MAX_KEY_CHARS} characters without a leading '$', "
                    "a '.' or control characters",
                )
            )
        _value(value, where, out, depth)


def _value(value: Any, path: str, out: Violations, depth: int) -> None:
    kind = value.WhichOneof("kind")
    if kind == "number_value" and not math.isfinite(value.number_value):
        out.append((path, "must be a finite number (no NaN or Infinity)"))
    elif kind == "struct_value":
        _struct(value.struct_value, path, out, depth + 1)
    elif kind == "list_value":
        _list(value.list_value, path, out, depth + 1)


def _list(values: Any, path: str, out: Violations, depth: int) -> None:
    if depth > MAX_DEPTH:
        out.append((path, f"nests more than {MAX_DEPTH} levels"))
        return
    for i, item in enumerate(values.values):
        _value(item, f"{path}[{i}]", out, depth)

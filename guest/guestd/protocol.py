"""The wire format: request envelopes, argument checking, replies and events.

Every malformed input becomes a :class:`GuestdError` with a code and a message
that names the field at fault; the daemon turns it into an error reply.
"""

from __future__ import annotations

import errno
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from . import PROTOCOL_VERSION

T = TypeVar("T")
JsonObject = dict[str, Any]

MAX_LINE_BYTES = 1 << 20
# Request ids must survive a round trip through any JSON parser (IEEE double).
MAX_REQUEST_ID = (1 << 53) - 1
_MISSING: Any = object()


class GuestdError(Exception):
    """A request that cannot be served; ``code`` is an errno name or a protocol code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> GuestdError:
    return GuestdError("EINVAL", message)


def from_os_error(error: OSError, doing: str) -> GuestdError:
    """An OSError as a reply: its errno name, what was being done and on which file."""
    code = errno.errorcode.get(error.errno or 0, "EIO")
    where = f" ({error.filename})" if error.filename else ""
    return GuestdError(code, f"{doing}: {error.strerror or error}{where}")


class Args:
    """The ``args`` object of one request, read field by field; unread fields are an error."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise invalid(f"{where}: expected an object, got {_kind(data)}")
        self._data: Mapping[str, Any] = data
        self._where = where
        self._read: set[str] = set()

    def error(self, key: str, problem: str) -> GuestdError:
        return invalid(f"{self._where}.{key}: {problem}")

    def has(self, key: str) -> bool:
        """Whether the request gives ``key`` (null counts as not given)."""
        return self._data.get(key) is not None

    def _raw(self, key: str, default: Any) -> tuple[Any, bool]:
        """The value and whether the request gave it (null counts as not given)."""
        self._read.add(key)
        value = self._data.get(key)
        if value is not None:
            return value, True
        if default is _MISSING:
            raise self.error(key, "missing (this argument is required)")
        return default, False

    def _checked(self, key: str, default: Any, check: Callable[[Any], T]) -> T:
        value, given = self._raw(key, default)
        if not given:
            return value  # type: ignore[no-any-return]
        try:
            return check(value)
        except ValueError as error:
            raise self.error(key, str(error)) from None

    def integer(self, key: str, minimum: int, maximum: int, default: Any = _MISSING) -> int:
        return self._checked(key, default, lambda value: whole(value, minimum, maximum))

    def boolean(self, key: str, default: Any = _MISSING) -> bool:
        return self._checked(key, default, _boolean)

    def text(self, key: str, default: Any = _MISSING, allow_empty: bool = False) -> str:
        return self._checked(key, default, lambda value: _text(value, allow_empty))

    def integers(self, key: str, minimum: int, maximum: int, default: Any = _MISSING) -> list[int]:
        return self._checked(key, default, lambda value: [whole(item, minimum, maximum) for item in _list(value)])

    def ids_or_all(self, key: str, maximum: int) -> list[int] | str:
        """A list of ids such as nodes, or the word ``all``."""
        return self._checked(key, _MISSING, lambda value: "all" if value == "all" else
                             [whole(item, 0, maximum) for item in _list(value)])

    def texts(self, key: str, default: Any = _MISSING) -> list[str]:
        return self._checked(key, default, lambda value: [_text(item) for item in _list(value)])

    def text_map(self, key: str, default: Any = _MISSING) -> dict[str, str]:
        return self._checked(key, default, _text_map)

    def sub(self, key: str) -> Args | None:
        """A nested object argument, or None when it is not given."""
        value, given = self._raw(key, None)
        return Args(value, f"{self._where}.{key}") if given else None

    def subs(self, key: str) -> list[Args]:
        """A list of object arguments; not given is an empty list."""
        value, given = self._raw(key, None)
        if not given:
            return []
        if not isinstance(value, list):
            raise self.error(key, f"expected a list of objects, got {_kind(value)}")
        return [Args(item, f"{self._where}.{key}[{index}]") for index, item in enumerate(value)]

    def done(self) -> None:
        unknown = sorted(set(self._data) - self._read)
        if unknown:
            known = ", ".join(sorted(self._read)) or "none"
            raise self.error(unknown[0], f"unknown argument (expected one of: {known})")


def whole(value: Any, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {_kind(value)}")
    if not minimum <= value <= maximum:
        raise ValueError(f"expected a whole number from {minimum} to {maximum}, got {value}")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_kind(value)}")
    return value


def _text(value: Any, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or not (value or allow_empty) or "\0" in value:
        raise ValueError(f"expected {'' if allow_empty else 'non-empty '}text without NUL, got {_kind(value)}")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list, got {_kind(value)}")
    return value


def _text_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError(f"expected an object of text values, got {_kind(value)}")
    return {_text(key): _text(item, allow_empty=True) for key, item in value.items()}


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"[:80]


@dataclass(frozen=True)
class Request:
    id: int
    op: str
    args: Args


class RequestError(GuestdError):
    """A line that is not a valid request; ``request_id`` is None when it carries no usable id."""

    def __init__(self, request_id: int | None, message: str) -> None:
        super().__init__("BAD_REQUEST", message)
        self.request_id = request_id


def parse_request(line: bytes) -> Request:
    """One request line, or :class:`RequestError` naming what is wrong with it."""
    try:
        data = json.loads(line, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise RequestError(None, f"not a JSON object: {str(error)[:200]}") from None
    if not isinstance(data, dict):
        raise RequestError(None, f"expected a JSON object, got {_kind(data)}")
    request_id = request_id_of(data)
    if request_id is None:
        given = _kind(data.get("id"))
        raise RequestError(None, f"'id' must be a whole number from 0 to {MAX_REQUEST_ID}, got {given}")
    if data.get("v") != PROTOCOL_VERSION:
        version = _kind(data.get("v"))
        raise RequestError(request_id, f"'v' must be {PROTOCOL_VERSION} (the protocol version), got {version}")
    op = data.get("op")
    if not isinstance(op, str) or not op:
        raise RequestError(request_id, f"'op' must be the name of an operation, got {_kind(op)}")
    unknown = sorted(set(data) - {"v", "id", "op", "args"})
    if unknown:
        raise RequestError(request_id, f"unknown envelope field {unknown[0]!r} (expected v, id, op, args)")
    try:
        args = Args({} if data.get("args") is None else data["args"], op)
    except GuestdError as error:
        raise RequestError(request_id, error.message) from None
    return Request(request_id, op, args)


def request_id_of(data: Any) -> int | None:
    """The id to answer to, or None when the request carries no usable one."""
    value = data.get("id") if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REQUEST_ID:
        return None
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def reply_ok(request_id: int, result: JsonObject) -> JsonObject:
    return {"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": result}


def reply_error(request_id: int | None, error: GuestdError) -> JsonObject:
    return {"v": PROTOCOL_VERSION, "id": request_id, "ok": False,
            "error": {"code": error.code, "message": error.message}}


def event(kind: str, run: int, **fields: Any) -> JsonObject:
    return {"v": PROTOCOL_VERSION, "event": kind, "run": run, **fields}


class ByteSink(Protocol):
    def write(self, data: bytes, /) -> object: ...

    def flush(self) -> object: ...


class Output:
    """The stdout channel, shared by the request loop and the run threads, one line per write."""

    def __init__(self, stream: ByteSink) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.closed = False

    def send(self, message: JsonObject) -> None:
        line = json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"
        with self._lock:
            if self.closed:
                return
            try:
                self._stream.write(line)
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                # The client is gone (ValueError: stream already closed); the loop sees EOF next.
                self.closed = True

"""Reading YAML mappings field by field, so every error names file and field."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

from testbed.errors import ConfigError
from testbed.units import UnitError

T = TypeVar("T")
_MISSING = object()


def read_user_text(path: Path) -> str:
    """The text of a file the user wrote: UTF-8 (a byte-order mark is allowed), or a ConfigError."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(path, "", f"cannot read: {error.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(path, "", f"not UTF-8 text (byte {data[error.start]:#04x} at offset {error.start})") from None


def load_yaml(path: Path) -> Any:
    text = read_user_text(path)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        if isinstance(error, yaml.reader.ReaderError):  # a control character: no mark, only an offset
            where = f"line {text.count(chr(10), 0, error.position) + 1}"
        # str() of a YAML error spans lines ("in <unicode string>, position 4"): keep its first.
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(path, where, f"not valid YAML: {problem}") from None


class Fields:
    """A YAML mapping being read; unread fields are reported by :meth:`done`."""

    def __init__(self, data: Any, path: Path, prefix: str = "") -> None:
        if not isinstance(data, dict):
            raise ConfigError(path, prefix, f"expected a mapping of fields, got {_kind(data)}")
        self._data = dict(data)
        self.path = path
        self._prefix = prefix
        self._read: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self._prefix}.{key}" if self._prefix else key

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.path, self.where(key), problem)

    def has(self, key: str) -> bool:
        return key in self._data

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        self._read.add(key)
        if key in self._data:
            return self._data[key]
        if default is _MISSING:
            raise self.error(key, "missing (this field is required)")
        return default

    def get(self, key: str, parse: Callable[[Any], T], default: Any = _MISSING) -> T:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value  # type: ignore[no-any-return]
        try:
            return parse(value)
        except (UnitError, ValueError, TypeError) as error:
            raise self.error(key, str(error)) from None

    def text(self, key: str, default: Any = _MISSING) -> str:
        return self.get(key, _text, default)

    def sub(self, key: str) -> Fields:
        return Fields(self.raw(key), self.path, self.where(key))

    def items(self, key: str, default: Any = _MISSING) -> Iterator[tuple[int, Any, str]]:
        values = self.raw(key, default)
        if not isinstance(values, list):
            raise self.error(key, f"expected a list, got {_kind(values)}")
        for index, value in enumerate(values):
            yield index, value, f"{self.where(key)}[{index}]"

    def done(self) -> None:
        unknown = sorted(set(self._data) - self._read, key=str)
        if unknown:
            known = ", ".join(sorted(self._read))
            raise self.error(str(unknown[0]), f"unknown field (expected one of: {known})")


def named_file(name_or_path: str, directory: Path, kind: str, base_dir: Path = Path()) -> Path:
    """A YAML file named by its stem in ``directory``, or a path (relative to ``base_dir``) to one."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        return base_dir / path
    candidate = directory / f"{name_or_path}.yaml"
    if not candidate.exists():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.yaml")))
        raise ConfigError(directory, "", f"no {kind} named {name_or_path!r} (known: {known})")
    return candidate


def choice(options: type[T]) -> Callable[[Any], T]:
    """A parser for one value of an enum, with the allowed values in its error."""

    def parse(value: Any) -> T:
        try:
            return options(value)  # type: ignore[call-arg]
        except ValueError:
            allowed = ", ".join(str(option) for option in options)  # type: ignore[attr-defined]
            raise ValueError(f"expected one of {allowed}, got {value!r}") from None

    return parse


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def whole(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"expected a whole number >= {minimum}, got {value!r}")
        return value

    return parse


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected non-empty text, got {_kind(value)}")
    return value.strip()


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"[:80]

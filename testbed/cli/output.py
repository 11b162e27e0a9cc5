"""`--json` for the commands that print data: one JSON document on stdout instead of the tables.

Values are the testbed's own dataclasses, converted as they are (enums by value, paths as strings), so a
script reads the same fields the code uses; numbers keep their units in the field names (``_ns``, bytes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from enum import Enum
from pathlib import Path
from typing import Any


def json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the data as JSON")


def jsonable(value: object) -> Any:
    """``value`` as plain JSON types: dataclasses as objects, enums by value, paths as strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: jsonable(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(jsonable(key)): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [jsonable(item) for item in items]
    return value


def print_json(value: object) -> None:
    print(json.dumps(jsonable(value), indent=2))

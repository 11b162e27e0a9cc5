"""Where the testbed keeps things: a cache (images, snapshots, models) and state (running VMs).

XDG locations by default; LLAMAS_CACHE and LLAMAS_STATE override them (tests use this).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    override = os.environ.get("LLAMAS_CACHE")
    if override:
        return Path(override)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llamas"


def state_dir() -> Path:
    override = os.environ.get("LLAMAS_STATE")
    if override:
        return Path(override)
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "llamas"

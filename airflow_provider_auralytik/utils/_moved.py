"""Old import paths of modules that moved: each one forwards to the new module, with a warning."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def moved_to(old: str, new: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``old`` that reads every name from ``new`` and warns once per name."""

    def __getattr__(name: str) -> Any:
        value = getattr(importlib.import_module(new), name)
        warnings.warn(f"{old} moved to {new}: import {name} from there.", DeprecationWarning, stacklevel=2)
        return value

    return __getattr__

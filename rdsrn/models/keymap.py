"""Renaming a checkpoint's keys onto a module of ours: ordered (regex, replacement)
rules, the first matching rule wins, unmatched keys pass unchanged (the strict load
that follows names them)."""

from __future__ import annotations

import re
from typing import Callable, Sequence, TypeVar, Union

T = TypeVar("T")
Rule = tuple[str, Union[str, Callable[[re.Match], str]]]


def rename_keys(state: dict[str, T], rules: Sequence[Rule]) -> dict[str, T]:
    """`state` with each key renamed by the first rule whose pattern matches it."""
    out: dict[str, T] = {}
    for key, value in state.items():
        new = key
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, key, count=1)
            if n:
                break
        out[new] = value
    return out

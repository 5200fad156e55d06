"""Layer groups of RDSRN for INT8 work (`--keep-float`, the sensitivity table); no torch
import, so command-line parsing can validate group names cheaply."""

from __future__ import annotations

from typing import Iterable

from rdsrn.runtimes.errors import UserError

# In forward order. body: the recursive block's DWCB convs, splits, concatenations and
# residual adds; cca: its channel attention; fusion: the concatenation of the passes, the
# fusion conv, the LR conv and the global residual; upsample: the 1x1 conv before
# PixelShuffle and the shuffle; hfrrb: the four HR convs and their skip; recon: the
# reconstruction conv and the output clamp.
GROUPS = ("shallow", "body", "cca", "fusion", "upsample", "hfrrb", "recon")


def check_groups(names: Iterable[str], what: str = "--keep-float") -> list[str]:
    """The layer group names, validated (UserError naming the unknown one)."""
    out = []
    for n in names:
        n = n.strip()
        if n not in GROUPS:
            raise UserError(f"{what}: unknown layer group {n!r} (groups: {', '.join(GROUPS)})")
        out.append(n)
    return out

"""Split integrity: no brick and no LRG in two splits (docs/design.md §1 (domain) fact 6: injections share LRGs)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import combinations

import pandas as pd

LRG_POSITION_DECIMALS = 6  # 1e-6 deg = 3.6 mas: far below a pixel, far above float noise


def lrg_ids(meta: pd.DataFrame) -> pd.Series:
    """One id per LRG: injections on the same galaxy share (ra, dec)."""
    return meta["ra"].round(LRG_POSITION_DECIMALS).astype(str) + "," + meta["dec"].round(LRG_POSITION_DECIMALS).astype(str)


@dataclass
class SplitReport:
    shared_bricks: dict[str, list[str]]  # "train|test" -> bricks in both
    shared_lrgs: dict[str, int]  # "train|test" -> number of LRG positions in both
    bricks_per_split: dict[str, int]
    lrgs_per_split: dict[str, int]

    @property
    def ok(self) -> bool:
        return not any(self.shared_bricks.values()) and not any(self.shared_lrgs.values())

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def split_report(metas: dict[str, pd.DataFrame]) -> SplitReport:
    bricks = {s: set(m["brickname"]) for s, m in metas.items()}
    lrgs = {s: set(lrg_ids(m)) for s, m in metas.items()}
    pairs = list(combinations(metas, 2))
    return SplitReport(
        shared_bricks={f"{a}|{b}": sorted(bricks[a] & bricks[b]) for a, b in pairs},
        shared_lrgs={f"{a}|{b}": len(lrgs[a] & lrgs[b]) for a, b in pairs},
        bricks_per_split={s: len(v) for s, v in bricks.items()},
        lrgs_per_split={s: len(v) for s, v in lrgs.items()},
    )

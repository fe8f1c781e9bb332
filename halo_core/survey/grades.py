"""People's grades of catalogue candidates, and the graded non-lenses that become training negatives (docs/design.md §8 (trust)).

The candidate gallery's buttons save a grades CSV in the browser (``id, ra, dec, grade, grader, time``;
grades A / B / C / "not a lens"). ``halo grades import`` checks it against the catalogue the gallery came
from and merges it into a grades file (parquet): one row per galaxy, the latest grade winning, with the
cutout file the catalogue scored (``source``) so the pixels a person judged are the pixels trained on.
Ids the catalogue does not hold and conflicting grades are reported, never silently dropped.

With ``graded_negatives_path`` set, the filtered dataset adds every "not a lens" to the **train split
only**: a galaxy in a val or test brick, or within ``real_sky.nonlens_min_separation_arcsec`` of a known
lens, is dropped and counted, so graded negatives never reach a validation set.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pandas as pd

from halo_core import uris
from halo_core.errors import ContractError
from halo_core.outputs import write_file

GRADES = ("A", "B", "C", "not a lens")
GRADE_COLUMNS = ("id", "ra", "dec", "grade", "grader", "time")


@dataclass
class GradesImport:
    out: str
    rows_read: int
    imported: int  # rows of this file that name a catalogue galaxy
    galaxies: int  # galaxies in the grades file after the merge
    by_grade: dict[str, int]
    unknown_ids: list[str] = field(default_factory=list)  # not in the catalogue: not imported
    conflicts: list[dict] = field(default_factory=list)  # {id, grade (the latest, kept), overridden}


def read_grades_csv(path: str) -> pd.DataFrame:
    """A gallery's grades CSV, checked: every column present, known grades, parseable UTC times."""
    try:
        table = pd.read_csv(io.BytesIO(uris.read_bytes(path)), dtype={"id": str, "grade": str, "grader": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ContractError(f"{path}: not a grades CSV ({err})") from None
    missing = [c for c in GRADE_COLUMNS if c not in table.columns]
    if missing:
        raise ContractError(f"{path}: no {missing} column(s); a grades CSV has {list(GRADE_COLUMNS)}")
    bad = table.index[~table["grade"].isin(GRADES)]
    if len(bad):
        raise ContractError(f"{path}: rows {[int(i) + 2 for i in bad[:5]]} have grades "
                            f"{sorted(set(table.loc[bad, 'grade'].astype(str)))}; want one of {list(GRADES)}")
    table["ra"] = pd.to_numeric(table["ra"], errors="coerce").astype(float)
    table["dec"] = pd.to_numeric(table["dec"], errors="coerce").astype(float)
    table["time"] = pd.to_datetime(table["time"], utc=True, errors="coerce", format="ISO8601")
    if table["time"].isna().any() or table["id"].isna().any():
        rows = table.index[table["time"].isna() | table["id"].isna()]
        raise ContractError(f"{path}: rows {[int(i) + 2 for i in rows[:5]]} lack an id or an ISO time")
    return table[list(GRADE_COLUMNS)]


def import_grades(csv_path: str, catalog: pd.DataFrame, out_path: str) -> GradesImport:
    """Merge a grades CSV into the grades file at ``out_path`` (created when absent): per galaxy the
    latest grade wins; each galaxy carries the catalogue's ``source``, ``brick`` and known-lens match."""
    read = read_grades_csv(csv_path)
    known = catalog.drop_duplicates("galaxy_id", keep="last").set_index("galaxy_id")
    unknown = sorted(set(read["id"]) - set(known.index))
    new = read[read["id"].isin(known.index)]
    columns = [c for c in ("source", "brick", "known_lens_name") if c in known.columns]
    new = new.join(known[columns], on="id")
    old = pd.read_parquet(io.BytesIO(uris.read_bytes(out_path))) if uris.exists(out_path) else new.iloc[:0]
    every = pd.concat([old, new], ignore_index=True).sort_values("time", kind="stable")
    conflicts = []
    for galaxy, group in every.groupby("id", sort=True):
        if group["grade"].nunique() > 1:
            conflicts.append({"id": galaxy, "grade": group["grade"].iloc[-1],
                              "overridden": [f"{g} ({who}, {t.isoformat()})" for g, who, t in
                                             group[["grade", "grader", "time"]].iloc[:-1].itertuples(index=False)]})
    merged = every.drop_duplicates("id", keep="last").sort_values("id").reset_index(drop=True)
    buf = io.BytesIO()
    merged.to_parquet(buf, index=False)
    write_file(out_path, buf.getvalue())
    return GradesImport(out=out_path, rows_read=len(read),
                        imported=len(new), galaxies=len(merged), by_grade=merged["grade"].value_counts().to_dict(),
                        unknown_ids=unknown, conflicts=conflicts)




"""Fetching real survey cutouts around catalogue positions from the Legacy Survey cutout service (docs/design.md §3 (data contract), §14 (cutouts in)).

One GET per object, ``<base-url>/cutout.fits?ra=..&dec=..&layer=ls-dr10&pixscale=0.262&bands=grz&size=101``;
the service answers a FITS primary image of shape (3, size, size) float32 (bands g, r, z; CHW). Each
object becomes one npz in the layout of the project's real cutouts (``cutout`` (size, size, 3) HWC
float32 nanomaggies, bit-exact to the FITS pixels, plus scalar ``meta_*``), named ``<id>.npz``.

The output folder is a *resumable folder* (docs/design.md §11 (storage and outputs)): each object is written atomically in
place, an object already fetched (its npz exists) or refused (the manifest says so) is skipped without
a request, a failed one is asked for again. ``_manifest.parquet`` holds one row per object in one of
three states:
- ``fetched``;
- ``refused`` with the reason: ``no_coverage`` (a band all zero or all NaN: outside the footprint),
  ``wrong_shape``, ``wrong_dtype``, ``html_body``, ``not_fits``, ``truncated_body``, or ``bad_position``
  (a NaN coordinate or |dec| > 90: never requested);
- ``failed`` with the HTTP status (or ``timeout`` / connection error) after the retries.
The manifest's leading underscore hides it from the cutout readers (``uris.find``, as pyarrow does).

HTTP is the standard library's (urllib): one GET with a timeout is all it needs, and retries are
ours so that each object's attempts are counted and a ``Retry-After`` is honoured but bounded.
FITS is astropy's.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import email.utils
import http.client
import io
import logging
import math
import random
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from halo_core import outputs, uris
from halo_core.config import DEFAULT_BASE_URL, DEFAULT_LAYER, DEFAULT_SIZE, DEFAULT_WORKERS
from halo_core.data.bricks import brick_names
from halo_core.data.stamps import BANDS, CUTOUT_KEY, PIXEL_SCALE_ARCSEC
from halo_core.errors import ContractError

log = logging.getLogger(__name__)

MANIFEST = "_manifest.parquet"
FETCHED, REFUSED, FAILED = "fetched", "refused", "failed"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")  # a file name on every filesystem and S3
POSITION_DECIMALS = 5  # 1e-5 deg = 0.036": two rows closer than that are one object
MANIFEST_COLUMNS = ("id", "ra", "dec", "brickname", "state", "reason", "http_status", "attempts", "url", "file",
                    "fetched_at", "input_rows")


@dataclass(frozen=True)
class FetchPolicy:
    """How the service is asked: where, for what, how many at once, and how patiently."""

    base_url: str = DEFAULT_BASE_URL
    layer: str = DEFAULT_LAYER
    size: int = DEFAULT_SIZE
    workers: int = DEFAULT_WORKERS
    timeout_s: float = 60.0  # a 101x101x3 FITS is 123 kB; the viewer renders it in well under a second
    max_attempts: int = 5
    backoff_s: float = 2.0  # first wait; doubled per attempt, with jitter
    max_wait_s: float = 300.0  # a longer Retry-After is cut to this: a run does not stall for an hour

    def __post_init__(self):
        if self.workers < 1 or self.max_attempts < 1 or self.size < 64:
            raise ContractError(f"fetch policy {self}: workers and max_attempts >= 1, size >= 64 (the stamp)")

    @classmethod
    def from_config(cls, real_sky) -> "FetchPolicy":
        """The policy of a config's ``real_sky`` block."""
        return cls(base_url=real_sky.base_url, layer=real_sky.layer, size=real_sky.size, workers=real_sky.workers)

    def url(self, ra: float, dec: float) -> str:
        query = urllib.parse.urlencode({"ra": f"{ra:.7f}", "dec": f"{dec:.7f}", "layer": self.layer,
                                        "pixscale": PIXEL_SCALE_ARCSEC, "bands": "".join(BANDS), "size": self.size})
        return f"{self.base_url.rstrip('/')}/cutout.fits?{query}"


@dataclass
class FetchReport:
    out_dir: str
    objects: int
    states: dict[str, int]  # fetched / refused / failed over every object, this run and earlier ones
    reasons: dict[str, int]  # refusal reasons and failure statuses
    skipped: int  # objects fetched or refused by an earlier run: no request
    requests: int
    retries: int
    duplicate_rows: int  # input rows that repeat an earlier row's position (one object each)
    seconds: float
    manifest: str = ""
    rows: pd.DataFrame = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "rows"}


# --------------------------------------------------------------------------------------------- targets

def _column(table: pd.DataFrame, name: str) -> str | None:
    matches = [c for c in table.columns if str(c).lower() == name]
    if len(matches) > 1:
        raise ContractError(f"columns {matches} all read as {name!r}; keep one")
    return matches[0] if matches else None


def read_catalog(path: str) -> pd.DataFrame:
    """A CSV or parquet catalogue with ``ra`` and ``dec`` (deg, any case), optionally ``id`` and ``brickname``."""
    if not uris.exists(path):
        raise ContractError(f"{path}: no such catalogue")
    data = uris.read_bytes(path)
    if path.endswith(".parquet"):
        return pd.read_parquet(io.BytesIO(data))
    if path.endswith(".csv"):
        return pd.read_csv(io.BytesIO(data))
    raise ContractError(f"{path}: a catalogue is a .csv or .parquet file")


def lenscat_targets(gradings: tuple[str, ...] = ("confident", "probable")) -> pd.DataFrame:
    """The lenscat known lenses of the given gradings, as targets named after the lens."""
    from halo_core.data.known_lenses import catalogue

    table = catalogue()
    unknown = sorted(set(gradings) - set(table["grading"].dropna()))
    if unknown:
        raise ContractError(f"lenscat gradings {unknown} unknown; it has {sorted(set(table['grading'].dropna()))}")
    chosen = table[table["grading"].isin(gradings)]
    return pd.DataFrame({"ra": chosen["ra"].to_numpy(float), "dec": chosen["dec"].to_numpy(float),
                         "known_lens_name": chosen["name"].astype(str).to_numpy(),
                         "grading": chosen["grading"].astype(str).to_numpy()})


def position_id(brickname: str, ra: float, dec: float) -> str:
    """A galaxy id from its brick and position: ``0001m040_0.10619m3.95577`` (unique to 0.036")."""
    return f"{brickname}_{ra:.{POSITION_DECIMALS}f}{'p' if dec >= 0 else 'm'}{abs(dec):.{POSITION_DECIMALS}f}"


def targets(table: pd.DataFrame, where: str) -> pd.DataFrame:
    """Catalogue rows -> one row per object: id, ra, dec, brickname, valid, input_rows, and the other
    columns (carried into the npz as ``meta_*``). Rows at one position (to 1e-5 deg) are one object;
    two positions under one given id are an error."""
    ra_col, dec_col = _column(table, "ra"), _column(table, "dec")
    if ra_col is None or dec_col is None:
        raise ContractError(f"{where}: needs ra and dec columns (deg, any case); has {list(table.columns)}")
    id_col, brick_col = _column(table, "id"), _column(table, "brickname")
    ra = pd.to_numeric(table[ra_col], errors="coerce").to_numpy(float)
    dec = pd.to_numeric(table[dec_col], errors="coerce").to_numpy(float)
    valid = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90)
    ra = np.where(valid, np.mod(ra, 360.0), ra)  # RA -10 is RA 350
    bricks = np.full(len(table), "", dtype=object)
    if brick_col is not None:
        bricks[:] = table[brick_col].fillna("").astype(str).str.strip().to_numpy()
    missing = valid & (bricks == "")
    if missing.any():
        bricks[missing] = brick_names(ra[missing], dec[missing])
    ids = np.empty(len(table), dtype=object)
    for i in range(len(table)):
        if id_col is not None and pd.notna(table[id_col].iloc[i]) and str(table[id_col].iloc[i]).strip():
            ids[i] = str(table[id_col].iloc[i]).strip()
        elif valid[i]:
            ids[i] = position_id(bricks[i], ra[i], dec[i])
        else:
            ids[i] = f"row{i}"
    bad_ids = [str(x) for x in ids if not ID_PATTERN.match(str(x))]
    if bad_ids:
        raise ContractError(f"{where}: ids {bad_ids[:5]} cannot name a file (letters, digits, _ . + - only, "
                            f"at most 128, first a letter or digit)")
    extra = [c for c in table.columns if c not in {ra_col, dec_col, id_col, brick_col}]
    out = pd.DataFrame({"id": ids, "ra": ra, "dec": dec, "brickname": bricks, "valid": valid,
                        **{str(c): table[c].to_numpy() for c in extra}})
    out["input_row"] = np.arange(len(table))
    key = np.where(valid, [f"{a:.{POSITION_DECIMALS}f},{b:.{POSITION_DECIMALS}f}" for a, b in zip(ra, dec)],
                   [f"invalid{i}" for i in range(len(table))])
    out["position"] = key
    conflicts = out.groupby("id")["position"].nunique()
    if (conflicts > 1).any():
        raise ContractError(f"{where}: ids {list(conflicts[conflicts > 1].index[:5])} name different positions")
    rows = out.groupby("position", sort=False)["input_row"].agg(list)
    objects = out.drop_duplicates("position").copy()
    objects["input_rows"] = objects["position"].map(rows)
    objects = objects.drop_duplicates("id")  # one position under two ids: the first id names it
    return objects.drop(columns=["input_row", "position"]).reset_index(drop=True)


# ----------------------------------------------------------------------------------------- the body

class Refusal(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


FITS_BLOCK, FITS_CARD = 2880, 80


def _fits_header(body: bytes):
    """The primary header (astropy's parse) and the byte offset of its data; Refusal when it never ends."""
    from astropy.io import fits

    for card in range(0, len(body) - FITS_CARD + 1, FITS_CARD):
        if body[card:card + 3] == b"END" and not body[card + 3:card + FITS_CARD].strip():
            try:
                header = fits.Header.fromstring(body[:card + FITS_CARD].decode("ascii"))
            except (ValueError, UnicodeDecodeError) as err:
                raise Refusal("not_fits", f"unreadable FITS header ({err})") from None
            return header, -(-(card + FITS_CARD) // FITS_BLOCK) * FITS_BLOCK
    raise Refusal("truncated_body", f"{len(body)} bytes and the FITS header has no END card")


def decode_fits(body: bytes, size: int, content_type: str = "") -> np.ndarray:
    """A service answer -> the (size, size, 3) HWC float32 cutout, the same bits as its FITS pixels;
    raises Refusal saying why the body is not one. The header is astropy's to parse; the pixels are read
    straight from the big-endian data block (no scaling is allowed, so nothing can change a bit), and
    without astropy's warnings machinery, which is not thread-safe and runs in the fetch's workers."""
    head = body[:512].lstrip().lower()
    if "html" in content_type.lower() or head.startswith((b"<!doctype", b"<html", b"<")):
        raise Refusal("html_body", f"an HTML page ({len(body)} bytes), not a FITS image")
    if not body.startswith(b"SIMPLE  ="):
        raise Refusal("not_fits", f"{len(body)} bytes that do not start a FITS file")
    header, offset = _fits_header(body)
    shape = tuple(int(header.get(f"NAXIS{i}", 0)) for i in range(int(header.get("NAXIS", 0)), 0, -1))  # C order
    if shape != (len(BANDS), size, size):
        raise Refusal("wrong_shape", f"image shape {shape}, want ({len(BANDS)}, {size}, {size})")
    if header.get("BITPIX") != -32 or header.get("BSCALE", 1) != 1 or header.get("BZERO", 0) != 0:
        raise Refusal("wrong_dtype", f"BITPIX {header.get('BITPIX')} (BSCALE {header.get('BSCALE', 1)}, BZERO "
                                     f"{header.get('BZERO', 0)}); want unscaled float32 (-32)")
    expected = offset + 4 * math.prod(shape)
    if len(body) < expected:
        raise Refusal("truncated_body", f"{len(body)} bytes; the header promises {expected}")
    data = np.frombuffer(body, dtype=">f4", count=math.prod(shape), offset=offset).reshape(shape)
    cutout = np.ascontiguousarray(data.transpose(1, 2, 0), dtype=np.float32)  # CHW -> HWC, byte order only
    empty = [b for i, b in enumerate(BANDS)
             if not np.isfinite(cutout[..., i]).any() or not np.nan_to_num(cutout[..., i]).any()]
    if empty:
        raise Refusal("no_coverage", f"band(s) {empty} all zero or all NaN: outside the survey footprint")
    return cutout


def encode_cutout(cutout: np.ndarray, meta: dict) -> bytes:
    """npz bytes in the real-cutout layout: ``cutout`` plus scalar ``meta_*`` entries."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{CUTOUT_KEY: cutout}, **{f"meta_{k}": np.asarray(v) for k, v in meta.items()})
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- HTTP

def _retry_after(headers, fallback: float) -> float:
    value = (headers or {}).get("Retry-After")
    if value is None:
        return fallback
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)  # the HTTP-date form
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds()) if when else fallback


def _get(url: str, timeout: float) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers={"User-Agent": "halo-cutouts (lens finder)"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers or {}), b""


def request_cutout(url: str, policy: FetchPolicy, sleep=time.sleep) -> tuple[int | None, dict, bytes, int, str]:
    """GET ``url`` until it answers 200, a status that is not worth repeating, or the attempts run out:
    (status, headers, body, attempts, error). 429 and 5xx wait ``Retry-After`` when given (at most
    max_wait_s), else an exponential backoff with jitter; timeouts and dropped connections back off too."""
    status, headers, error = None, {}, ""
    for attempt in range(1, policy.max_attempts + 1):
        try:
            status, headers, body = _get(url, policy.timeout_s)
            error = ""
        except http.client.IncompleteRead as err:  # the connection closed before Content-Length bytes
            status, headers, body, error = None, {}, err.partial, "truncated_body"
        except (TimeoutError, socket.timeout):
            status, headers, body, error = None, {}, b"", "timeout"
        except (urllib.error.URLError, ConnectionError, http.client.HTTPException) as err:
            status, headers, body, error = None, {}, b"", f"connection: {getattr(err, 'reason', err)}"
        if status == 200:
            return status, headers, body, attempt, ""
        if status is not None and status not in RETRY_STATUSES:
            return status, headers, body, attempt, f"HTTP {status}"
        if attempt == policy.max_attempts:
            break
        backoff = policy.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random() / 2)
        sleep(min(policy.max_wait_s, _retry_after(headers, backoff) if status is not None else backoff))
    return status, headers, body, policy.max_attempts, error or f"HTTP {status}"


# ------------------------------------------------------------------------------------------- one object

def fetch_object(target: dict, policy: FetchPolicy, out_dir: str) -> dict:
    """Fetch, check and write one object; its manifest row."""
    row = {"id": target["id"], "ra": target["ra"], "dec": target["dec"], "brickname": target["brickname"],
           "state": REFUSED, "reason": "", "http_status": None, "attempts": 0, "url": "", "file": "",
           "fetched_at": "", "input_rows": list(target["input_rows"])}
    if not target["valid"]:
        return {**row, "reason": "bad_position", "detail": f"ra={target['ra']} dec={target['dec']}: not a sky position"}
    url = policy.url(target["ra"], target["dec"])
    status, headers, body, attempts, error = request_cutout(url, policy)
    row.update(url=url, http_status=status, attempts=attempts)
    if status != 200:
        if error == "truncated_body":  # every attempt ended early: the body itself is the fault
            return {**row, "reason": "truncated_body", "detail": "the connection closed before the whole body"}
        return {**row, "state": FAILED, "reason": error}
    try:
        cutout = decode_fits(body, policy.size, headers.get("Content-Type", ""))
    except Refusal as refusal:
        return {**row, "reason": refusal.reason, "detail": str(refusal)}
    fetched_at = datetime.now(timezone.utc).isoformat()
    carried = {k: v for k, v in target.items()
               if k not in {"id", "ra", "dec", "brickname", "valid", "input_rows"} and _scalar(v)}
    meta = {**carried, "ra": float(target["ra"]), "dec": float(target["dec"]), "brickname": str(target["brickname"]),
            "galaxy_id": str(target["id"]), **{f"nan_count_{b}": int(np.isnan(cutout[..., i]).sum())
                                                for i, b in enumerate(BANDS)},
            "source": url, "fetched_at": fetched_at, "layer": policy.layer, "size": policy.size,
            "pixel_scale": PIXEL_SCALE_ARCSEC}
    name = f"{target['id']}.npz"
    outputs.write_item(out_dir, name, encode_cutout(cutout, meta))
    return {**row, "state": FETCHED, "file": name, "fetched_at": fetched_at}


def _scalar(value) -> bool:
    return isinstance(value, (str, int, float, bool, np.generic)) and not (isinstance(value, float) and math.isnan(value))


# ------------------------------------------------------------------------------------------ the folder

def progress_line(done: int, total: int, started: float, states: dict[str, int]) -> str:
    """``done/total (pct) rate/s ETA`` plus the states so far: one line of progress."""
    elapsed = max(time.perf_counter() - started, 1e-9)
    rate = done / elapsed
    eta = (total - done) / rate if rate > 0 else math.inf
    eta_text = "?" if not math.isfinite(eta) else f"{int(eta // 60)}m{int(eta % 60):02d}s"
    counts = " ".join(f"{k}={v}" for k, v in sorted(states.items()))
    return f"cutouts {done}/{total} ({100 * done / max(total, 1):.1f} %) {rate:.1f}/s ETA {eta_text} {counts}"


def _read_manifest(out_dir: str) -> pd.DataFrame:
    path = uris.join(out_dir, MANIFEST)
    if not uris.exists(path):
        return pd.DataFrame(columns=list(MANIFEST_COLUMNS))
    return pd.read_parquet(io.BytesIO(uris.read_bytes(path)))


def _write_manifest(out_dir: str, rows: dict[str, dict]) -> None:
    frame = pd.DataFrame([{k: r.get(k) for k in MANIFEST_COLUMNS} for r in rows.values()], columns=list(MANIFEST_COLUMNS))
    frame["http_status"] = frame["http_status"].astype("Int64")
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    uris.atomic_write_bytes(uris.join(out_dir, MANIFEST), buf.getvalue())


def fetch_cutouts(objects: pd.DataFrame, out_dir: str, policy: FetchPolicy = FetchPolicy(), *,
                  inputs: tuple[str, ...] = (), flush_every_s: float = 2.0, progress=None) -> FetchReport:
    """Fetch every object of ``objects`` (from ``targets``) into ``out_dir``, resuming an earlier run:
    objects already fetched (their npz exists) or refused are skipped without a request. ``inputs``
    (the catalogue files) must not overlap the output."""
    started = time.perf_counter()
    outputs.resumable_folder(out_dir, inputs)  # refuses an output that is, contains or lies inside an input
    previous = _read_manifest(out_dir)
    present = {Path(p).stem for p in uris.find(out_dir, ".npz")}
    done_before = {r["id"]: r for r in previous.to_dict("records")
                   if (r["state"] == FETCHED and r["id"] in present) or r["state"] == REFUSED}
    rows: dict[str, dict] = {}
    todo = []
    for target in objects.to_dict("records"):
        if target["id"] in done_before:
            rows[target["id"]] = {**done_before[target["id"]], "input_rows": list(target["input_rows"])}
        elif target["id"] in present:  # written by a run killed before its manifest caught up
            rows[target["id"]] = {**{k: target.get(k) for k in ("id", "ra", "dec", "brickname")}, "state": FETCHED,
                                  "reason": "", "http_status": 200, "attempts": 0, "url": policy.url(target["ra"], target["dec"]),
                                  "file": f"{target['id']}.npz", "fetched_at": "", "input_rows": list(target["input_rows"])}
        else:
            todo.append(target)
    skipped = len(rows)
    progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    lock, last_flush, requests, retries = threading.Lock(), time.perf_counter(), 0, 0
    states = {s: sum(r["state"] == s for r in rows.values()) for s in (FETCHED, REFUSED, FAILED)}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=policy.workers, thread_name_prefix="halo-cutouts")
    try:
        futures = [pool.submit(fetch_object, t, policy, out_dir) for t in todo]
        for n, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            row = future.result()
            with lock:
                rows[row["id"]] = row
            states[row["state"]] += 1
            requests += row["attempts"]
            retries += max(0, row["attempts"] - 1)
            if row["state"] != FETCHED:
                log.info("%s %s: %s %s", row["id"], row["state"], row["reason"], row.get("detail", ""))
            now = time.perf_counter()
            if now - last_flush >= flush_every_s or n == len(futures):
                _write_manifest(out_dir, rows)
                progress(progress_line(n, len(futures), started, states))
                last_flush = now
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _write_manifest(out_dir, rows)
    frame = _read_manifest(out_dir)
    reasons = frame.loc[frame["state"] != FETCHED, "reason"].value_counts().to_dict()
    return FetchReport(out_dir=out_dir, objects=len(rows), states={k: int(v) for k, v in states.items()},
                       reasons={str(k): int(v) for k, v in reasons.items()}, skipped=skipped, requests=requests,
                       retries=retries, duplicate_rows=int(sum(len(r) - 1 for r in objects["input_rows"])),
                       seconds=round(time.perf_counter() - started, 3), manifest=uris.join(out_dir, MANIFEST),
                       rows=frame)

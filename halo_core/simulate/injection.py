"""Simulated arcs injected into real survey cutouts: the paired dataset's third mode (docs/design.md §3 (data contract)).

The galaxy, its neighbours, the sky and its noise are real; only the arc is ours. Per real cutout
(``cutout`` (101, 101, 3) HWC g,r,z in nanomaggies, as npz files or as a parquet ``cutout`` blob
column with the ``meta_*`` fields as columns):
- control = the central 64x64 crop (rows/cols 18..81), transposed to CHW and otherwise unchanged;
- the lens is an SIE + shear from the simulator's prior, aligned with the galaxy's light: axis ratio
  and position angle from Gaussian-weighted second moments of its r-band light (``light_moments``);
- the arc is the simulator's lensed Sersic source convolved with a Moffat PSF whose per-band FWHM
  comes from the cutout's ``psfsize_{g,r,z}`` metadata where present, else DEFAULT_PSF_FWHM_ARCSEC
  (the nominal DR10 seeing the simulator is centred on); the ``psf_source`` column says which;
- stamp = control + arc + the arc's own Poisson noise (gain drawn as in the simulator); the sky noise
  is already in the control;
- ``arc_snr`` = max-pixel r-band SNR of the noiseless arc against the cutout's own sky sigma,
  1.4826 x MAD of the pixels in an outer annulus of the full cutout (NOISE_ANNULUS_PX);
- several injections per galaxy; every galaxy of a brick goes to one split, so splits are disjoint
  by brick and by galaxy.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from halo_core import uris
from halo_core.data.stamps import (
    BANDS,
    CUTOUT_KEY,
    PIXEL_SCALE_ARCSEC,
    STAMP_SIZE,
    central_stamp,
    encode_stamp,
    read_checked_cutout,
    read_cutout_meta,
)
from halo_core.errors import ContractError, StampDecodeError
from halo_core.outputs import dataset_folder
from halo_core.simulate.catalog import AB_ZERO_POINT_MAG, point_source_depth
from halo_core.simulate.dataset import (
    DEPTH_BIN_EDGES_MAG,
    GAIN_E_PER_NMGY,
    PSF_BIN_EDGES_ARCSEC,
    PSF_FWHM_ARCSEC,
    SPLITS,
    draw_injections,
    render_arcs,
)
from halo_core.simulate.lens import q_phi_to_e1e2
from halo_core.simulate.psf import moffat_kernel
from halo_core.simulate.source import DEFAULT_OVERSAMPLE

CUTOUT_SUFFIXES = (".npz", ".parquet")
REQUIRED_META = ("ra", "dec", "brickname")
DEFAULT_PSF_FWHM_ARCSEC = PSF_FWHM_ARCSEC  # g 1.45", r 1.30", z 1.20": nominal DR10 seeing
PSF_META_KEYS = tuple(f"psfsize_{b}" for b in BANDS)  # Tractor's per-band PSF FWHM (arcsec)
# radii (px from the cutout centre) of the sky annulus: outside the 64x64 crop's inscribed circle and
# inside the 101x101 cutout's, so the galaxy's light is faint there and every pixel is real sky
NOISE_ANNULUS_PX = (32.0, 50.0)
MOMENT_SIGMA_PX = 3.0  # Gaussian weight of the light moments: the LRG core, not its neighbours
MAD_TO_SIGMA = 1.4826
EXPERIMENT_ID = "halo-inject"
CONFIG_ID = "real_cutout_sie_shear_sersic_moffat_v1"
log = logging.getLogger(__name__)
_GALAXY_CHUNK = 32  # galaxies rendered per vectorised batch, as in the simulator


@dataclass
class RealCutout:
    galaxy_id: str
    cutout: np.ndarray  # (H, W, 3) HWC g,r,z, nanomaggies, exactly as stored
    control: np.ndarray  # (3, 64, 64) the central crop
    meta: dict  # scalar metadata, ``meta_`` prefix removed; ra, dec, brickname always present
    source: str


@dataclass(frozen=True)
class InjectionReport:
    out_dir: str
    galaxies: dict[str, int]
    rows: dict[str, int]
    bricks: dict[str, list[str]]
    psf_source: dict[str, int]  # galaxies whose PSF came from their metadata / the default
    arc_snr_median: float
    seed: int
    seconds: float
    refused: dict[str, int] = dataclasses.field(default_factory=dict)  # reason -> cutouts not used

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# `shipped` names the six real DR10 lens candidates that ship inside halo, so a fresh clone validates on
# real pixels with no download (halo_core/data/real_dr10_cutouts/README.md)
SHIPPED_CUTOUTS = "shipped"
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "data" / "real_dr10_cutouts"


def cutout_files(paths: list[str] | str) -> list[str]:
    """The .npz and .parquet files named by ``paths`` (files, or folders searched recursively; ``shipped``
    is halo's own six real cutouts)."""
    files = []
    for path in [paths] if isinstance(paths, str) else paths:
        path = str(SHIPPED_DIR) if path == SHIPPED_CUTOUTS else path
        if path.endswith(CUTOUT_SUFFIXES):
            files.append(path)
        else:
            files.extend(f for suffix in CUTOUT_SUFFIXES for f in uris.find(path, suffix))
    if not files:
        raise ContractError(f"{paths}: no .npz or .parquet cutouts found")
    return files


def _cutout(blob: bytes, source: str, meta: dict, max_nonfinite_frac: float) -> tuple[np.ndarray, np.ndarray, dict]:
    # headers read before data (no decompression bombs); the rules every reader of real cutouts applies
    cutout, npz_meta, reason = read_checked_cutout(blob, source, max_nonfinite_frac)
    if reason is not None:
        raise StampDecodeError(f"{source}: cutout refused ({reason})", reason)
    control = central_stamp(cutout)
    meta = {**npz_meta, **meta}
    missing = [k for k in REQUIRED_META if meta.get(k) is None]
    if missing:
        raise ContractError(f"{source}: cutout metadata lacks {missing} (need meta_ra, meta_dec, meta_brickname)")
    return cutout, control, meta


def _brick_column(names: list[str], where: str) -> str:
    for name in ("meta_brickname", "brickname"):
        if name in names:
            return name
    raise ContractError(f"{where}: no brickname column (meta_brickname or brickname); has {sorted(names)}")


def bricks_by_file(paths: list[str] | str) -> list[tuple[str, list[str]]]:
    """(file, the brick of each of its cutouts) for every file under ``paths``, in read_cutouts' order,
    from metadata alone: no pixel is decoded, so a split by brick can be chosen first and only the
    files and cutouts it keeps read after."""
    out = []
    for path in cutout_files(paths):
        if path.endswith(".npz"):
            meta = read_cutout_meta(uris.read_bytes(path), path)
            if meta.get("brickname") is None:
                raise ContractError(f"{path}: cutout metadata lacks brickname")
            out.append((path, [str(meta["brickname"])]))
            continue
        fs, inner = uris.filesystem(path)
        with fs.open(inner, "rb") as f:
            parquet = pq.ParquetFile(f)
            column = _brick_column(parquet.schema_arrow.names, path)
            out.append((path, [str(b) for b in parquet.read(columns=[column])[column].to_pylist()]))
    return out


@dataclass(frozen=True)
class Refusal:
    """A real cutout a reader did not use, and why (data.stamps.refusal's reasons, or an unreadable file)."""

    source: str
    reason: str


def read_cutouts(paths: list[str] | str, bricks: set[str] | None = None, *, refused: list[Refusal] | None = None,
                 max_nonfinite_frac: float | None = None) -> list[RealCutout]:
    """Every usable cutout under ``paths`` (or, with ``bricks``, those of these bricks only; the others are
    never decoded): npz files, and parquet rows holding a ``cutout`` npz blob with their metadata as columns
    (``meta_ra`` or ``ra``, ...), local or on S3. A cutout the rules of data.stamps.refusal refuse (or
    that cannot be read) is appended to ``refused`` and skipped; without ``refused`` it raises."""
    if max_nonfinite_frac is None:
        from halo_core.config import HaloConfig

        max_nonfinite_frac = HaloConfig.model_fields["max_nonfinite_pixel_frac"].default
    out = []

    def refuse(err: StampDecodeError, source: str) -> None:
        if refused is None:
            raise err
        log.warning("%s", err)
        refused.append(Refusal(source, err.reason))

    for path in cutout_files(paths):
        if path.endswith(".npz"):
            try:
                blob = uris.read_bytes(path)
                if bricks is not None and str(read_cutout_meta(blob, path).get("brickname")) not in bricks:
                    continue
                cutout, control, meta = _cutout(blob, path, {}, max_nonfinite_frac)
            except StampDecodeError as err:
                refuse(err, path)
                continue
            out.append(RealCutout(str(meta.get("galaxy_id", Path(path).stem)), cutout, control, meta, path))
            continue
        fs, inner = uris.filesystem(path)
        try:
            with fs.open(inner, "rb") as f:
                table = pq.read_table(f)
        except (OSError, pa.ArrowException) as err:
            refuse(StampDecodeError(f"{path}: unreadable parquet ({err})", "corrupt_file"), path)
            continue
        if CUTOUT_KEY not in table.column_names:
            raise ContractError(f"{path}: no {CUTOUT_KEY!r} column; has {sorted(table.column_names)}")
        columns = [c for c in table.column_names if c != CUTOUT_KEY]
        records = table.select(columns).to_pylist()
        for i, (blob, row) in enumerate(zip(table[CUTOUT_KEY].to_pylist(), records)):
            row = {k.removeprefix("meta_"): v for k, v in row.items()}
            if bricks is not None and str(row.get("brickname")) not in bricks:
                continue
            where = f"{path} row {i}"
            try:
                if blob is None:
                    raise StampDecodeError(f"{where}: cutout blob is NULL", "null_blob")
                cutout, control, meta = _cutout(blob, where, row, max_nonfinite_frac)
            except StampDecodeError as err:
                refuse(err, where)
                continue
            out.append(RealCutout(str(meta.get("galaxy_id", f"{Path(path).stem}_{i}")), cutout, control, meta, where))
    return out


def annulus_mask(shape: tuple[int, int], radii: tuple[float, float]) -> np.ndarray:
    yy, xx = np.indices(shape)
    r = np.hypot(yy - (shape[0] - 1) / 2, xx - (shape[1] - 1) / 2)
    return (r >= radii[0]) & (r < radii[1])


def sky_sigma(cutout: np.ndarray) -> np.ndarray:
    """(3,) per-band sky noise of an HWC cutout: 1.4826 x MAD over the outer annulus (NaN-aware)."""
    pixels = cutout[annulus_mask(cutout.shape[:2], NOISE_ANNULUS_PX)].astype(np.float64)  # (n, 3)
    median = np.nanmedian(pixels, axis=0)
    return MAD_TO_SIGMA * np.nanmedian(np.abs(pixels - median), axis=0)


def light_moments(image: np.ndarray, sky_level: float) -> tuple[float, float]:
    """Axis ratio and position angle (rad, from +x towards +y, the simulator's convention) of a
    galaxy at the stamp centre, from Gaussian-weighted second moments of its sky-subtracted light."""
    size = image.shape[-1]
    yy, xx = np.indices(image.shape) - size // 2  # the simulator's origin: pixel 32 of 64
    light = np.clip(np.nan_to_num(image - sky_level), 0, None) * np.exp(-0.5 * (xx**2 + yy**2) / MOMENT_SIGMA_PX**2)
    total = light.sum()
    if total <= 0:
        return 1.0, 0.0
    mxx, myy, mxy = ((light * xx * xx).sum() / total, (light * yy * yy).sum() / total,
                     (light * xx * yy).sum() / total)
    half_trace, diff = (mxx + myy) / 2, np.hypot((mxx - myy) / 2, mxy)
    q = float(np.sqrt(max(half_trace - diff, 0.0) / (half_trace + diff)))
    return q, float(np.mod(0.5 * np.arctan2(2 * mxy, mxx - myy), np.pi))


def psf_fwhm(meta: dict) -> tuple[np.ndarray, str]:
    """Per-band PSF FWHM (arcsec) from the cutout's metadata, else the documented default."""
    values = [meta.get(k) for k in PSF_META_KEYS]
    if all(v is not None and np.isfinite(v) and v > 0 for v in values):
        return np.asarray(values, dtype=float), "metadata"
    return DEFAULT_PSF_FWHM_ARCSEC.copy(), "default"


@dataclass(frozen=True)
class Hosts:
    """What an injection needs of its real hosts, measured once from their cutouts and metadata."""

    controls: np.ndarray  # (n, 3, 64, 64) the central crops
    sigma: np.ndarray  # (n, 3) sky sigma of the outer annulus (sky_sigma)
    light: np.ndarray  # (n, 2) axis ratio and position angle of the galaxy's light (light_moments)
    deflector_r: np.ndarray  # (n,) r magnitude in the central 21x21 px (5.5") box, sky subtracted
    fwhm: np.ndarray  # (n, 3) per-band PSF FWHM (arcsec), psf_fwhm
    psf_source: list[str]  # "metadata" or "default", per host
    psfdepth_r: np.ndarray  # (n,) the metadata's psfdepth_r, else point_source_depth of sigma and fwhm
    depth_source: list[str]  # "metadata" or "sky_sigma", per host


def measure_hosts(galaxies: list[RealCutout]) -> Hosts:
    """The sky, light, PSF and depth of each host (see Hosts), in the order given."""
    sigma = np.stack([sky_sigma(g.cutout) for g in galaxies])
    sky_r = np.array([np.nanmedian(g.cutout[annulus_mask(g.cutout.shape[:2], NOISE_ANNULUS_PX), 1])
                      for g in galaxies])
    light = np.array([light_moments(g.control[1], s) for g, s in zip(galaxies, sky_r)])
    core = np.array([np.nansum(g.control[1, 22:43, 22:43]) - 441 * s for g, s in zip(galaxies, sky_r)])
    psf = [psf_fwhm(g.meta) for g in galaxies]
    fwhm = np.stack([f for f, _ in psf])
    listed = np.array([float(g.meta.get("psfdepth_r", np.nan)) for g in galaxies])
    measured = np.isfinite(listed)
    return Hosts(controls=np.stack([g.control for g in galaxies]), sigma=sigma, light=light,
                 deflector_r=AB_ZERO_POINT_MAG - 2.5 * np.log10(np.clip(core, 1e-3, None)), fwhm=fwhm,
                 psf_source=[s for _, s in psf],
                 psfdepth_r=np.where(measured, listed, point_source_depth(sigma[:, 1], fwhm[:, 1])),
                 depth_source=["metadata" if m else "sky_sigma" for m in measured])


def inject_arcs(rng: np.random.Generator, hosts: Hosts, inj: dict, owner: np.ndarray, gain: np.ndarray,
                oversample: int = DEFAULT_OVERSAMPLE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stamps, noiseless arcs, magnifications) of injections ``inj`` into hosts ``owner``: each host's
    control plus the arc convolved with its own PSF, plus the arc's Poisson noise at the host's ``gain``."""
    used, index = np.unique(owner, return_inverse=True)  # kernels of the hosts used only, once each
    kernels = moffat_kernel(hosts.fwhm[used] / PIXEL_SCALE_ARCSEC)  # (n, 3, K, K)
    arc, noise, magnification = render_arcs(rng, inj, np.arange(len(owner)), kernels[index],
                                            gain[owner][:, None, None, None], oversample)
    return (hosts.controls[owner] + (arc + noise)).astype(np.float32), arc, magnification


def assign_splits(bricks: list[str], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """brick -> split: bricks in a seeded order, the first val/test fractions to val and test (at
    least one each), the rest to train; every split needs a brick, so at least three."""
    unique = sorted(set(bricks))
    if len(unique) < len(SPLITS):
        raise ContractError(f"{len(unique)} distinct brick(s) {unique}: splits disjoint by brick need >= 3")
    order = [unique[i] for i in np.random.default_rng([seed, 4]).permutation(len(unique))]
    n_test = max(1, round(fractions["test"] * len(unique)))
    n_val = max(1, min(round(fractions["val"] * len(unique)), len(unique) - n_test - 1))
    return {b: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, b in enumerate(order)}


def _meta_value(value):
    return value.item() if isinstance(value, np.generic) else value


def _rows(galaxies: list[RealCutout], split: str, inj: dict, owner: np.ndarray, stamps, arc, magnification,
          sigma, fwhm, psf_source, light, gain, region, seed: int, per_galaxy: int) -> pd.DataFrame:
    meta = [galaxies[o].meta for o in owner]
    psfdepth = np.array([float(m.get("psfdepth_r", np.nan)) for m in meta])
    arc_r = arc[:, 1] / sigma[owner, 1][:, None, None]
    src_mag = AB_ZERO_POINT_MAG - 2.5 * np.log10(inj["src_flux"])
    q_src = inj["src_q"]
    control_blobs = [encode_stamp(g.control) for g in galaxies]  # one per galaxy, shared by its injections
    columns = {
        "stamp_npz": [encode_stamp(s) for s in stamps], "ctrl_stamp_npz": [control_blobs[o] for o in owner],
        "task_id": [f"inj{seed}-{galaxies[o].galaxy_id}-{k % per_galaxy:02d}" for k, o in enumerate(owner)],
        "brickname": [str(m["brickname"]) for m in meta], "ra": [float(m["ra"]) for m in meta],
        "dec": [float(m["dec"]) for m in meta], "theta_e_arcsec": inj["theta_e"],
        "arc_snr": arc_r.max(axis=(-2, -1)), "arc_snr_sum": np.sqrt((arc_r**2).sum(axis=(-2, -1))),
        "is_control": np.zeros(len(owner), np.int64), "psfsize_r": fwhm[owner, 1],
        **{f"psf_fwhm_used_{b}": fwhm[owner, i] for i, b in enumerate(BANDS)},
        "psfdepth_r": psfdepth,
        "bad_pixel_frac": [float(m.get("bad_pixel_frac", m.get("nan_frac", np.nan))) for m in meta],
        "wise_brightmask_frac": [float(m.get("wise_brightmask_frac", np.nan)) for m in meta],
        "src_dmag": inj["src_dmag"], "src_reff_arcsec": inj["src_reff"], "src_e": (1.0 - q_src) / (1.0 + q_src),
        "shear": inj["shear"], "lens_e": np.hypot(*q_phi_to_e1e2(inj["lens_q"], inj["lens_phi"])),
        "lens_phi_rad": inj["lens_phi"], "magnification": magnification,
        "cutout_ok": [int(bool(m.get("quality_ok", True))) for m in meta],
        "ebv": [float(m.get("ebv", np.nan)) for m in meta],
        "psf_bin": np.digitize(fwhm[owner, 1], PSF_BIN_EDGES_ARCSEC).astype(np.int64),
        "depth_bin": np.where(np.isfinite(psfdepth), np.digitize(psfdepth, DEPTH_BIN_EDGES_MAG), -1).astype(np.int64),
        "region_id": region[owner].astype(np.int64), "experiment_id": EXPERIMENT_ID, "config_id": CONFIG_ID,
        "bandset": "grz", "stamp_size": STAMP_SIZE, "split": split,
        # what the arc was made of, to re-render it (tests do) and to bin completeness by it
        "galaxy_id": [galaxies[o].galaxy_id for o in owner], "cutout_source": [galaxies[o].source for o in owner],
        "psf_source": [psf_source[o] for o in owner], "light_q": light[owner, 0], "light_phi_rad": light[owner, 1],
        "lens_q": inj["lens_q"], "gamma1": inj["gamma1"], "gamma2": inj["gamma2"],
        "src_x_arcsec": inj["src_x"], "src_y_arcsec": inj["src_y"], "src_n": inj["src_n"], "src_q": q_src,
        "src_phi_rad": inj["src_phi"], **{f"src_mag_{b}": src_mag[:, i] for i, b in enumerate(BANDS)},
        "gain_e_per_nmgy": gain[owner], **{f"sky_sigma_{b}": sigma[owner, i] for i, b in enumerate(BANDS)},
    }
    frame = pd.DataFrame(columns)
    carried = sorted({k for m in meta for k in m} - set(REQUIRED_META))
    for key in carried:  # the cutout's own metadata, under its original meta_ name
        frame[f"meta_{key}"] = [_meta_value(m.get(key)) for m in meta]
    return frame


def inject_cutouts(galaxies: list[RealCutout], out_dir, *, injections_per_galaxy: int = 4, seed: int = 0,
                   val_fraction: float = 0.15, test_fraction: float = 0.2,
                   oversample: int = DEFAULT_OVERSAMPLE) -> InjectionReport:
    """Write out_dir/{train,val,test}/part-NNNNN.parquet in the paired schema (docs/design.md §3 (data contract))."""
    started = time.perf_counter()
    split_of = assign_splits([str(g.meta["brickname"]) for g in galaxies],
                             {"val": val_fraction, "test": test_fraction}, seed)
    region_of = {b: i for i, b in enumerate(sorted(split_of))}
    root = Path(out_dir)
    report = {"galaxies": {}, "rows": {}, "bricks": {}, "psf_source": {"metadata": 0, "default": 0}}
    snr = []
    for split_index, split in enumerate(SPLITS):
        members = [g for g in galaxies if split_of[str(g.meta["brickname"])] == split]
        split_dir = root / split
        split_dir.mkdir(parents=True, exist_ok=True)
        n_rows = 0
        for chunk_index, start in enumerate(range(0, len(members), _GALAXY_CHUNK)):
            chunk = members[start:start + _GALAXY_CHUNK]
            rng = np.random.default_rng([seed, 3, split_index, chunk_index])
            hosts = measure_hosts(chunk)
            gain = rng.uniform(*GAIN_E_PER_NMGY, len(chunk))
            owner = np.repeat(np.arange(len(chunk)), injections_per_galaxy)
            inj = draw_injections(rng, owner, hosts.light[:, 0], hosts.light[:, 1], hosts.deflector_r)
            stamps, arc, magnification = inject_arcs(rng, hosts, inj, owner, gain, oversample)
            region = np.array([region_of[str(g.meta["brickname"])] for g in chunk])
            frame = _rows(chunk, split, inj, owner, stamps, arc, magnification, hosts.sigma, hosts.fwhm,
                          hosts.psf_source, hosts.light, gain, region, seed, injections_per_galaxy)
            path = split_dir / f"part-{chunk_index:05d}.parquet"
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path.with_suffix(".tmp"))
            path.with_suffix(".tmp").replace(path)
            n_rows += len(frame)
            snr.append(frame["arc_snr"].to_numpy())
            for source in hosts.psf_source:
                report["psf_source"][source] += 1
        report["galaxies"][split], report["rows"][split] = len(members), n_rows
        report["bricks"][split] = sorted({str(g.meta["brickname"]) for g in members})
    return InjectionReport(out_dir=str(root), **report, arc_snr_median=float(np.median(np.concatenate(snr))),
                           seed=seed, seconds=round(time.perf_counter() - started, 3))


INJECTION_FILE = "injection.json"  # the report, written last: its presence means the dataset is complete


def inject_dataset(cutouts: list[str] | str, out_uri: str, injection) -> InjectionReport:
    """Read the cutouts under ``cutouts`` and inject arcs with the config's ``injection`` block into the
    dataset folder ``out_uri`` (staged: the previous dataset there stays until this one is complete)."""
    sources = [cutouts] if isinstance(cutouts, str) else list(cutouts)
    refused: list[Refusal] = []
    with dataset_folder(str(out_uri), INJECTION_FILE, sources) as out:
        galaxies = read_cutouts(cutouts, refused=refused)
        if not galaxies:
            raise ContractError(f"{cutouts}: no usable cutouts (refused: {refusal_counts(refused)})")
        report = inject_cutouts(galaxies, out, injections_per_galaxy=injection.injections_per_galaxy,
                                seed=injection.seed, val_fraction=injection.val_fraction,
                                test_fraction=injection.test_fraction)
        report = dataclasses.replace(report, out_dir=str(out_uri), refused=refusal_counts(refused))
        uris.atomic_write_json(str(out / INJECTION_FILE), report.to_dict())
    return report


def refusal_counts(refused: list[Refusal]) -> dict[str, int]:
    """reason -> how many cutouts it refused."""
    counts: dict[str, int] = {}
    for r in refused:
        counts[r.reason] = counts.get(r.reason, 0) + 1
    return dict(sorted(counts.items()))

"""The selection function: completeness of the production model at its operating threshold over a
grid of (theta_E, PSF FWHM, depth, source magnitude), by injection-recovery on Ray (docs/design.md §13 (survey path), §8 (trust)).

One injection per host per cell, so a cell's counts are independent trials and the Wilson interval
holds. Where the hosts come from is a seam, ``InjectionSource``:
- ``SimulatedInjections`` (no real cutouts configured): the embedded simulator's LRGs observed at the
  cell's PSF and depth, ``injections_per_cell`` of them per cell;
- ``RealHostInjections`` (``lrg_cutouts_path`` set): real cutouts, whose PSF and depth are measured,
  not imposed. Those axes become bins of the hosts' own values (the paired schema's psf_bin and
  depth_bin edges), each host lands in the cell of its measured values, and a cell's n is the number
  of its hosts: below ``injections_per_cell`` it is reported, with its n, as not measurable. Only the
  hosts of the test split's bricks are used: the model trained on arcs in the others.
theta_E and the source magnitude are imposed on the injected lens in both.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from halo_core import uris
from halo_core.errors import ContractError
from halo_core.metrics import wilson_interval
from halo_core.outputs import write_dataset
from halo_core.ray_runtime import ray_session
from halo_core.simulate.dataset import DEPTH_BIN_EDGES_MAG, PSF_BIN_EDGES_ARCSEC

AXES = ("theta_e_arcsec", "psf_fwhm_arcsec", "psfdepth_r_mag", "source_r_mag")
SELECTION_JSON = "selection_function.json"
SELECTION_HTML = "selection_function.html"


@dataclass(frozen=True)
class Cell:
    theta_e_arcsec: float
    psf_fwhm_arcsec: float
    psfdepth_r_mag: float
    source_r_mag: float


@dataclass(frozen=True)
class Completeness:
    """A completeness with its n and 95 % Wilson interval; below ``minimum`` trials it is not measurable
    (the numbers stay, so a reader sees how little there is)."""

    n: int
    detected: int
    completeness: float | None
    ci_low: float | None
    ci_high: float | None
    measurable: bool

    @classmethod
    def of(cls, detected: int, n: int, minimum: int, **where):
        """``where`` names what a subclass measures it at (a cell's axes, an axis value)."""
        low, high = wilson_interval(detected, n) if n else (None, None)
        return cls(n=n, detected=detected, completeness=detected / n if n else None, ci_low=low, ci_high=high,
                   measurable=n >= minimum, **where)


@dataclass(frozen=True)
class CellCompleteness(Completeness, Cell):
    """One cell's completeness: the cell's axes, then its counts (one flat row, as the JSON has it)."""


@dataclass(frozen=True)
class AxisCompleteness(Completeness):
    """The completeness at one value of an axis, pooled over the others."""

    value: float


@dataclass(frozen=True)
class HostFalsePositives:
    """The real hosts' own cutouts, without an arc, at or above the threshold: the model's false positives
    on the very hosts whose completeness is measured."""

    n: int
    above_threshold: int
    rate: float
    ci_low: float
    ci_high: float
    measurable: bool


@dataclass(frozen=True)
class HostBin:
    """An occupied bin of the hosts' measured values on one axis (np.digitize's index on the edges)."""

    bin: int
    low: float | None  # None: open below the first edge
    high: float | None  # None: open above the last edge
    value: float  # the median of its hosts' values: the cell's value on that axis
    n_hosts: int


@dataclass(frozen=True)
class SimulatedHosts:
    """The embedded simulator's LRGs, observed at each cell's imposed PSF and depth."""

    source: str = "simulated"


@dataclass(frozen=True)
class RealHosts:
    """Real cutouts, in the cell of their own measured PSF and depth."""

    path: str
    selected: str  # which cutouts of ``path``, in words
    n_hosts: int
    refused: dict[str, int]  # reason -> host cutouts the reading rules refused
    bricks: list[str]
    psf_source: dict[str, int]  # where each host's PSF came from ("metadata", "default") -> hosts
    depth_source: dict[str, int]  # where each host's depth came from ("metadata", "sky_sigma") -> hosts
    bins: dict[str, list[HostBin]]  # psf_fwhm_arcsec, psfdepth_r_mag -> the occupied bins
    source: str = "real"


@dataclass(frozen=True)
class SelectionFunction:
    """What selection_function.json holds."""

    model_version: str
    operating_fpr: float
    threshold: float
    injections: str  # the InjectionSource's class
    hosts: RealHosts | SimulatedHosts  # the fuller first: records.from_json reads the first the JSON fits
    axes: dict[str, list[float]]  # AXES -> the grid's values
    injections_per_cell: int  # the fewest injections that make a cell measurable
    n: int  # injections, all cells
    cells_measurable: int
    cells: list[CellCompleteness]  # sorted by AXES
    marginals: dict[str, list[AxisCompleteness]]  # AXES -> by value
    controls_above_threshold: HostFalsePositives | None  # None for simulated hosts
    seconds: float


class InjectionSource(Protocol):
    def cells(self, grid) -> list[tuple[Cell, int]]:
        """Every cell of the grid (a SelectionFunctionConfig) with the injections it gets."""

    def inject(self, cell: Cell, n: int, seed: tuple[int, ...]) -> np.ndarray:
        """(n, 3, 64, 64) g,r,z nanomaggies: n hosts, each with one lens of the cell's parameters."""

    def describe(self) -> RealHosts | SimulatedHosts:
        """What the report says of the hosts."""

    def controls(self) -> np.ndarray | None:
        """(n, 3, 64, 64) the real hosts without an arc (None for simulated ones): the share the model
        puts above the threshold is its false-positive rate on these very hosts, beside their completeness."""


def _impose(inj: dict, cell: Cell, n: int) -> None:
    """The cell's theta_E and source r magnitude on drawn injections; the rest of the prior kept."""
    from halo_core.simulate.catalog import mag_to_flux_nmgy

    colours = inj["src_flux"] / inj["src_flux"][:, 1:2]  # the drawn g-r, r-z colours kept
    # the source offsets were drawn in units of the drawn theta_E: rescale them to the cell's
    scale = cell.theta_e_arcsec / inj["theta_e"]
    inj["src_x"], inj["src_y"] = inj["src_x"] * scale, inj["src_y"] * scale
    inj["theta_e"] = np.full(n, cell.theta_e_arcsec)
    inj["src_flux"] = colours * mag_to_flux_nmgy(np.full(n, cell.source_r_mag))[:, None]


class SimulatedInjections:
    """The embedded simulator's hosts and lenses (halo_core.simulate), with the cell's theta_E and
    source magnitude imposed on the lens and its PSF and depth on the observation."""

    def cells(self, grid) -> list[tuple[Cell, int]]:
        return [(Cell(*values), grid.injections_per_cell)
                for values in itertools.product(*(getattr(grid, axis) for axis in AXES))]

    def describe(self) -> SimulatedHosts:
        return SimulatedHosts()

    def controls(self) -> None:
        return None

    def inject(self, cell: Cell, n: int, seed: tuple[int, ...]) -> np.ndarray:
        from halo_core.simulate.catalog import sky_sigma_for_depth
        from halo_core.simulate.dataset import PSF_FWHM_ARCSEC, SKY_SIGMA_NMGY, draw_split, render_chunk
        from halo_core.simulate.source import DEFAULT_OVERSAMPLE

        rng = np.random.default_rng(seed)
        lrg, inj = draw_split(rng, [("grid", 180.0, 0.0)], n, n, 1, 0)
        # PSF: the nominal g:r:z ratios scaled to the cell's r-band FWHM, with the simulator's 3 % jitter
        lrg["fwhm"] = PSF_FWHM_ARCSEC * (cell.psf_fwhm_arcsec / PSF_FWHM_ARCSEC[1]) * np.exp(rng.normal(0, 0.03, (n, 3)))
        # depth: the sky sigma that gives this 5-sigma point-source depth (the simulator's psfdepth_r,
        # inverted); g and z keep their nominal ratios to r
        sky_r = sky_sigma_for_depth(cell.psfdepth_r_mag, cell.psf_fwhm_arcsec)
        lrg["sky"] = np.tile(SKY_SIGMA_NMGY.mean(axis=1) / SKY_SIGMA_NMGY[1].mean() * sky_r, (n, 1))
        _impose(inj, cell, n)
        inj["masked"][:] = False
        inj["nan"][:] = False
        stamps = [render_chunk(rng, lrg, inj, idx, DEFAULT_OVERSAMPLE).stamps
                  for idx in np.array_split(np.arange(n), max(1, -(-n // 32)))]
        return np.concatenate(stamps)


def _bins(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, list[HostBin]]:
    """Each value's bin (np.digitize on ``edges``: open below the first and above the last edge) and
    the occupied bins, each named by the median of its hosts' values (the cell's value on that axis)."""
    index = np.digitize(values, edges)
    bins = []
    for b in sorted(set(index.tolist())):
        members = values[index == b]
        bins.append(HostBin(bin=b, low=float(edges[b - 1]) if b > 0 else None,
                            high=float(edges[b]) if b < len(edges) else None,
                            value=round(float(np.median(members)), 3), n_hosts=len(members)))
    return index, bins


class RealHostInjections:
    """Lenses injected into real cutouts (halo_core.simulate.injection): the host, its neighbours, sky and noise
    are real; the arc is the simulator's, convolved with the host's PSF, with the cell's theta_E and
    source magnitude. The PSF and depth of a cell are bins of the hosts' measured values."""

    def __init__(self, galaxies: list, path: str = "", selected: str = "", refused: dict[str, int] | None = None):
        from halo_core.simulate.injection import measure_hosts

        self.refused = refused or {}  # reason -> host cutouts the reading rules refused (data.stamps.refusal)
        if not galaxies:
            raise ContractError(f"{path}: no real hosts for the selection function ({selected or 'none given'})")
        self.hosts = measure_hosts(galaxies)
        self.galaxy_ids = [g.galaxy_id for g in galaxies]
        self.bricks = sorted({str(g.meta["brickname"]) for g in galaxies})
        self.path, self.selected = path, selected
        psf_bin, self.psf_bins = _bins(self.hosts.fwhm[:, 1], PSF_BIN_EDGES_ARCSEC)
        depth_bin, self.depth_bins = _bins(self.hosts.psfdepth_r, DEPTH_BIN_EDGES_MAG)
        psf_value = {b.bin: b.value for b in self.psf_bins}
        depth_value = {b.bin: b.value for b in self.depth_bins}
        members: dict[tuple[float, float], list[int]] = {}
        for host, (p, d) in enumerate(zip(psf_bin, depth_bin)):
            members.setdefault((psf_value[p], depth_value[d]), []).append(host)
        self.members = {k: np.array(v) for k, v in members.items()}  # (psf, depth) value -> its hosts

    @classmethod
    def held_out(cls, cfg) -> "RealHostInjections":
        """The hosts of ``lrg_cutouts_path`` in the test split's bricks, split as paired_stamps splits
        them (``injection`` fractions and seed): the others' arcs trained and calibrated the model."""
        from halo_core.simulate.injection import assign_splits, bricks_by_file, read_cutouts, refusal_counts

        files, inj = bricks_by_file(cfg.lrg_cutouts_path), cfg.injection
        bricks = [b for _, of_file in files for b in of_file]
        split = assign_splits(bricks, {"val": inj.val_fraction, "test": inj.test_fraction}, inj.seed)
        test = {b for b, s in split.items() if s == "test"}
        # only the files and cutouts of the test bricks are read again and decoded: memory and I/O follow
        # the held-out share, not the survey
        refused = []
        hosts = read_cutouts([f for f, of_file in files if test.intersection(of_file)], bricks=test, refused=refused,
                             max_nonfinite_frac=cfg.max_nonfinite_pixel_frac)
        return cls(hosts, cfg.lrg_cutouts_path, f"{len(hosts)} of {len(bricks)} cutouts, those in the test "
                                                "split's bricks", refusal_counts(refused))

    def cells(self, grid) -> list[tuple[Cell, int]]:
        return [(Cell(t, p.value, d.value, m), len(self.members.get((p.value, d.value), ())))
                for t in grid.theta_e_arcsec for p in self.psf_bins for d in self.depth_bins
                for m in grid.source_r_mag]

    def describe(self) -> RealHosts:
        from collections import Counter

        return RealHosts(path=self.path, selected=self.selected, n_hosts=len(self.galaxy_ids), refused=self.refused,
                         bricks=self.bricks, psf_source=dict(Counter(self.hosts.psf_source)),
                         depth_source=dict(Counter(self.hosts.depth_source)),
                         bins={"psf_fwhm_arcsec": self.psf_bins, "psfdepth_r_mag": self.depth_bins})

    def controls(self) -> np.ndarray:
        return self.hosts.controls

    def inject(self, cell: Cell, n: int, seed: tuple[int, ...]) -> np.ndarray:
        from halo_core.simulate.dataset import GAIN_E_PER_NMGY, draw_injections
        from halo_core.simulate.injection import inject_arcs

        owner = self.members[(cell.psf_fwhm_arcsec, cell.psfdepth_r_mag)]
        if n != len(owner):
            raise ValueError(f"{cell}: {len(owner)} hosts, asked for {n} injections (one per host)")
        rng = np.random.default_rng(seed)
        gain = np.zeros(len(self.galaxy_ids))
        gain[owner] = rng.uniform(*GAIN_E_PER_NMGY, n)
        inj = draw_injections(rng, owner, self.hosts.light[:, 0], self.hosts.light[:, 1], self.hosts.deflector_r)
        _impose(inj, cell, n)
        return inject_arcs(rng, self.hosts, inj, owner, gain)[0]


def injection_source(cfg) -> InjectionSource:
    """Real hosts where real cutouts are configured, else the simulator's."""
    return RealHostInjections.held_out(cfg) if cfg.lrg_cutouts_path else SimulatedInjections()


def cells(cfg) -> list[Cell]:
    return [c for c, _ in SimulatedInjections().cells(cfg.selection_function)]


def _scorer(model):
    import torch

    from halo_core.survey.scoring import ScoringModel

    torch.set_num_threads(1)
    scorer = ScoringModel.load(model.path, model.calibration, model.prevalence)
    return lambda stamps: int((scorer.predict(stamps)["probability"] >= model.threshold).sum())


def _score_cells(model, work: list[tuple[Cell, int, tuple[int, int]]], source: InjectionSource,
                 minimum: int) -> list[CellCompleteness]:
    """One Ray task: a group of (cell, n, seed) rendered and scored with one loaded model."""
    detect = _scorer(model)
    return [CellCompleteness.of(detect(source.inject(cell, n, seed)), n, minimum, **cell.__dict__)
            for cell, n, seed in work]


def _score_controls(model, source: InjectionSource, minimum: int) -> HostFalsePositives:
    """One Ray task: the hosts' own controls scored; above the threshold = a false positive."""
    controls = source.controls()
    n, k = len(controls), _scorer(model)(controls)
    low, high = wilson_interval(k, n)
    return HostFalsePositives(n=n, above_threshold=k, rate=k / n, ci_low=low, ci_high=high, measurable=n >= minimum)


def _marginal(rows: list[CellCompleteness], axis: str, minimum: int) -> list[AxisCompleteness]:
    out = []
    for value in sorted({getattr(r, axis) for r in rows}):
        at = [r for r in rows if getattr(r, axis) == value]
        out.append(AxisCompleteness.of(sum(r.detected for r in at), sum(r.n for r in at), minimum, value=value))
    return out


def selection_function(cfg, model, *, source: InjectionSource | None = None,
                       num_cpus: int | None = None) -> SelectionFunction:
    """Completeness per cell and per axis of ``model`` (a CatalogModel) at its operating threshold, with
    the hosts of ``injection_source(cfg)`` unless ``source`` is given."""
    import ray

    from halo_core.errors import CheckpointError

    if model.threshold is None:
        raise CheckpointError(f"{model.path}: its card has no measured threshold at FPR {model.operating_fpr:g} "
                              "(too few distinct test negatives); the selection function needs one")
    started = time.perf_counter()
    grid, source = cfg.selection_function, source or injection_source(cfg)
    planned = source.cells(grid)
    # a cell's injections depend on its place in the grid only, not on the grouping into tasks
    work = [(cell, n, (grid.seed, i)) for i, (cell, n) in enumerate(planned)]
    rows = [CellCompleteness.of(0, 0, grid.injections_per_cell, **cell.__dict__) for cell, n, _ in work if n == 0]
    with ray_session(num_cpus):
        task = ray.remote(num_cpus=1)(_score_cells)
        shared = ray.put(source)  # once, not once per task: real hosts carry their images
        # one task per (PSF, depth) pair of cells: the model is loaded once per task, not per cell
        groups: dict[tuple, list] = {}
        for item in work:
            if item[1]:
                groups.setdefault((item[0].psf_fwhm_arcsec, item[0].psfdepth_r_mag), []).append(item)
        futures = [task.remote(model, items, shared, grid.injections_per_cell) for items in groups.values()]
        real = source.controls() is not None
        false_positives = (ray.remote(num_cpus=1)(_score_controls).remote(model, shared, grid.injections_per_cell)
                           if real else None)
        rows += [row for result in ray.get(futures) for row in result]
        controls = ray.get(false_positives) if real else None
    rows.sort(key=lambda r: tuple(getattr(r, a) for a in AXES))
    return SelectionFunction(
        model_version=model.version, operating_fpr=model.operating_fpr, threshold=model.threshold,
        injections=type(source).__name__, hosts=source.describe(),
        axes={a: sorted({getattr(c, a) for c, _ in planned}) for a in AXES},
        injections_per_cell=grid.injections_per_cell, n=sum(r.n for r in rows),
        cells_measurable=sum(r.measurable for r in rows),
        cells=rows, marginals={a: _marginal(rows, a, grid.injections_per_cell) for a in AXES},
        controls_above_threshold=controls,
        seconds=round(time.perf_counter() - started, 3),
    )


@dataclass(frozen=True)
class PooledCompleteness:
    """Completeness over theta_E x source magnitude, pooled over PSF and depth: per [magnitude, theta_E]
    the injections n and the completeness, NaN where n is below the injections per cell (not measurable)."""

    theta_e_arcsec: list[float]
    source_r_mag: list[float]
    n: np.ndarray
    measurable: np.ndarray
    completeness: np.ndarray


def pooled_completeness(result: SelectionFunction) -> PooledCompleteness:
    theta, mags = result.axes["theta_e_arcsec"], result.axes["source_r_mag"]
    k = np.zeros((len(mags), len(theta)))
    n = np.zeros_like(k)
    for r in result.cells:
        i, j = mags.index(r.source_r_mag), theta.index(r.theta_e_arcsec)
        k[i, j] += r.detected
        n[i, j] += r.n
    measurable = n >= result.injections_per_cell
    return PooledCompleteness(theta, mags, n, measurable, np.where(measurable, k / np.maximum(n, 1), np.nan))


def write_report(result: SelectionFunction, out_dir: str) -> tuple[str, dict[str, bytes]]:
    """selection_function.json and a self-contained selection_function.html; (html URI, plots)."""
    from halo_core.reports.selection import selection_html, selection_plots  # matplotlib only when writing a report

    pngs = selection_plots(result, pooled_completeness(result))
    write_dataset(out_dir, {SELECTION_HTML: selection_html(result, pngs).encode(),
                            SELECTION_JSON: uris.json_text(asdict(result)).encode()}, SELECTION_JSON)
    return uris.join(out_dir, SELECTION_HTML), pngs

"""Evaluation's results as typed records (halo_core.records): the shortcut gates (gates.json) and the
evaluation report (report.json), which the checks, the verdict, the registry and the CLI read by attribute."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from halo_core import uris
from halo_core.metrics import LEGACY_OPERATING_FPR, current_spelling, wilson_interval
from halo_core.records import from_json


@dataclass
class Stratum:
    """A probe's AUC on one slice: a theta_E bin's lenses against all non-lenses, or a PSF tercile."""

    stratum: str
    n_pos: int
    n_neg: int
    auc: float  # NaN without a lens in the bin


@dataclass
class GateResult:
    gate: str
    auc: float  # NaN when the gate has no features (e.g. no metadata columns)
    n: int
    n_features: int
    threshold: float
    strata: list[Stratum]
    ci95: tuple[float, float] = (math.nan, math.nan)  # bootstrap over samples of the out-of-fold scores

    @property
    def passed(self) -> bool:
        return math.isnan(self.auc) or self.auc <= self.threshold

    def to_dict(self) -> dict:
        return {**asdict(self), "ci95": list(self.ci95), "passed": self.passed}


@dataclass
class SelectionNull:
    """The probes on arc-free inputs: positives' own controls (label 1) against the negatives (label 0)."""

    informative: bool  # False for paired constructions, whose two sides are the same images
    probes: dict[str, GateResult]
    threshold: float
    reason: str = ""

    @property
    def max_auc(self) -> float:
        aucs = [g.auc for g in self.probes.values() if not math.isnan(g.auc)]
        return max(aucs) if aucs else math.nan

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.probes.values())

    def to_dict(self) -> dict:
        return {"informative": self.informative, "reason": self.reason, "threshold": self.threshold,
                "max_auc": self.max_auc, "passed": self.passed,
                "probes": {name: g.to_dict() for name, g in self.probes.items()}}


@dataclass
class GatesReport:
    """Data-level evidence (probes), the blocking selection null and deployability of one dataset."""

    probes: dict[str, GateResult]
    selection_null: SelectionNull
    deployable: bool  # the model's input holds no control stamp
    data_fingerprint: str  # of the filtered dataset measured: promotion requires the report's

    @property
    def passed(self) -> bool:
        return self.selection_null.passed and self.deployable

    def to_dict(self) -> dict:
        return {"passed": self.passed, "deployable": self.deployable, "selection_null": self.selection_null.to_dict(),
                "gates": {name: g.to_dict() for name, g in self.probes.items()}, "data_fingerprint": self.data_fingerprint}

    @classmethod
    def from_dict(cls, d: dict) -> GatesReport:
        """gates.json (its probes are written under "gates")."""
        return from_json(cls, {**d, "probes": d["gates"]})

    @classmethod
    def read(cls, uri: str) -> GatesReport:
        return cls.from_dict(uris.read_json(uri))


@dataclass
class MetricComparison:
    """One metric of champion / challenger on the same test split."""

    production: float
    challenger: float
    difference: float  # challenger minus production
    ci_half_width: float  # paired, class-stratified bootstrap
    tolerance: float  # max(min_tolerance, ci_half_width)
    not_worse: bool


@dataclass
class Comparison:
    """Champion / challenger (promotion.compare), or why none was made (``skipped``); the card keeps it."""

    promote: bool
    skipped: str = ""  # "": compared
    n_test: int | None = None
    n_positives: int | None = None
    n_negatives: int | None = None
    n_distinct_negatives: int | None = None
    ci: float | None = None
    resamples: int | None = None
    operating_fpr: float | None = None
    metrics: dict[str, MetricComparison] = field(default_factory=dict)
    not_compared: list[str] = field(default_factory=list)  # metrics left out, and why
    production_version: str | None = None
    test_data_fingerprint: str = ""

    @property
    def worst(self) -> tuple[str, MetricComparison] | None:
        """The metric nearest to (or furthest past) its tolerance; None when skipped."""
        return min(self.metrics.items(), key=lambda item: item[1].difference + item[1].tolerance, default=None)


@dataclass
class EvaluationReport:
    """Which model, trained on which data, was evaluated on which data, and what the held-out test split
    says of it. Promotion refuses a report that names another model (docs/design.md §5 (verdict))."""

    split: str
    model: str
    model_sha256: str
    model_training_hash: str
    model_data_fingerprint: str
    data_fingerprint: str
    config_hash: str
    model_config_hash: str
    needs_control: bool
    sample_construction: str
    metrics: dict  # halo_core.metrics.classification_metrics, calibrated probabilities
    calibration: dict  # the scaling in use, its test ECE before/after, and the alternative's
    deployment_prevalence: float
    arc_snr_zero: dict
    per_brick: dict
    theta_e_bins: list[dict]
    theta_e_completeness_trend: dict
    psf_fwhm_bins: list[dict]
    arc_snr_bins: list[dict]
    training: dict  # best epoch, the per-epoch history (EpochRecord.to_dict), the plan's progress reports
    monitors: dict
    shortcut_diagnostics: dict
    control_substitutes: dict | None  # None for a model without a control channel
    realism_probe: dict
    core_perturbation: dict
    shift_suite: dict = field(default_factory=dict)
    # the numerics the test split, and so the operating threshold, was scored in (halo_core.precision)
    precision: str = "fp32"
    plots: dict[str, str] = field(default_factory=dict)  # name -> path relative to the report folder

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> EvaluationReport:
        """A stored report; one written while the operating point was fixed at 1e-2 reads in today's names."""
        report = cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})
        if report.shift_suite:
            report.shift_suite = {"operating_fpr": LEGACY_OPERATING_FPR, **current_spelling(report.shift_suite)}
        return report

    @classmethod
    def read(cls, uri: str) -> EvaluationReport:
        return cls.from_dict(uris.read_json(uri))

    def tpr_at(self, fpr: float) -> dict:
        """The operating point at ``fpr`` (tpr, threshold, precision at the prevalence, n negatives)."""
        return next(t for t in self.metrics["tpr_at_fpr"] if t["fpr"] == fpr)


@dataclass
class Rate:
    """k of n with its Wilson 95 % interval: recall on real lenses, FPR on real non-lenses."""

    n: int
    k: int
    rate: float | None  # None for n = 0
    ci95: tuple[float, float]

    @classmethod
    def of(cls, k: int, n: int) -> Rate:
        return cls(n, k, k / n if n else None, wilson_interval(k, n))


@dataclass
class OperatingPoint:
    """A threshold of the synthetic test split (calibrated probability at a nominal FPR) and what it gives on
    real galaxies; the real-galaxy fields stay None where the synthetic split cannot measure the threshold."""

    fpr: float
    threshold: float | None
    measurable: bool
    synthetic_tpr: float | None
    n_synthetic_negatives: int
    operating: bool  # the configured operating FPR
    recall: Rate | None = None
    fpr_real: Rate | None = None
    purity_at_synthetic_fpr: float | None = None  # at the deployment prevalence
    purity_at_real_fpr: float | None = None


@dataclass
class GradingRecall:
    fpr: float
    recall: Rate | None  # None: the threshold is not measurable


@dataclass
class PurityTarget:
    """The plan's sim-to-real purity target at the operating threshold (real_sky.purity_target); the measured
    values are None when there is no real recall or no real non-lens to measure them on."""

    status: str  # "met", "not met" or "not measurable: why"
    measurable: bool
    passed: bool
    purity: float
    prevalence: float
    recall: float | None = None
    required_fpr: float | None = None
    fpr: float | None = None
    fpr_ci95: tuple[float, float] | None = None  # Wilson
    n_nonlenses: int | None = None
    nonlenses_needed: int | None = None  # with no false positive, to show an FPR of required_fpr


@dataclass
class RealSkyCounts:
    """What the real-sky set (real_sky.build_real_sky_set) read, kept and dropped."""

    n_lenses: int
    n_nonlenses: int
    lenses_read: int
    lenses_dropped_by_grading: dict[str, int]
    test_bricks: list[str]
    lrgs_in_test_bricks: int
    lrgs_dropped_near_known_lens: int
    nonlens_min_separation_arcsec: float


@dataclass
class GalaxyScore:
    galaxy_id: str
    probability: float  # calibrated
    known_lens_name: str | None  # lenscat, within known_lens_radius_arcsec
    known_lens_grading: str | None


@dataclass
class ValidationReport:
    """Real lenses and non-lenses scored at the synthetic test split's thresholds (validation.json)."""

    model: str
    lenses_path: str
    nonlenses_path: str | None
    nonlenses_are_standins: bool
    nonlenses_label: str
    n_lenses: int
    n_nonlenses: int
    operating_fpr: float
    operating_threshold: float | None
    operating_measurable: bool
    threshold_source: str
    prevalence: float
    purity_target: float
    operating_points: list[OperatingPoint]
    known_lens_radius_arcsec: float
    known_lens_matches: dict[str, int]  # "lenses" / "nonlenses" -> galaxies matched to lenscat
    scores: dict[str, list[GalaxyScore]]  # "lenses" / "nonlenses"
    # the evaluation report's realism probe, which one section renders for both pages: a dict until both are typed
    realism_probe: dict
    purity_target_check: PurityTarget
    recall_by_grading: dict[str, list[GradingRecall]] | None  # a real-sky set's lenses, per lenscat grading
    real_sky_set: RealSkyCounts | None
    refused: dict[str, int]  # cutouts refused, by reason
    plots: dict[str, str]  # name -> path relative to the report folder

    @property
    def operating(self) -> OperatingPoint:
        return next(p for p in self.operating_points if p.operating)

"""Evaluation's results as typed records (halo_core.records): the shortcut gates (gates.json) and the
evaluation report (report.json), which the checks, the verdict, the registry and the CLI read by attribute."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

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
class MaskedArcs:
    """Stamps whose arc was masked (arc_snr == 0): controls in disguise, and the share scored as lens."""

    n: int
    accuracy_as_lens: float | None  # None without such stamps
    ci95: list[float]  # Wilson


@dataclass
class BrickAuroc:
    brick: str
    n_pos: int
    n_neg: int
    auroc: float


@dataclass
class PerBrickAuroc:
    """Test AUROC per brick with at least ``min_per_class`` of each class: its spread and the worst bricks."""

    min_per_class: int
    n_bricks: int
    n_bricks_total: int
    std: float | None  # None with fewer than two bricks
    worst: list[BrickAuroc]


@dataclass
class DetectionBin:
    """Lenses in one bin of a quantity (theta_E, PSF FWHM, arc SNR): completeness at p >= 0.5 and AUROC."""

    lo: float
    hi: float | None  # the open last bin: inf in memory, null in report.json
    n: int
    completeness: float | None  # None for an empty bin
    ci95: list[float]  # Wilson
    n_negatives: int
    auroc: float | None


@dataclass
class TrendViolation:
    """A theta_E bin whose completeness lies below an earlier bin's, their Wilson intervals disjoint."""

    earlier: str
    later: str
    completeness: list[float]
    ci95: list[list[float]]


@dataclass
class CompletenessTrend:
    n_bins_measured: int
    measurable: bool  # at least two bins hold lenses
    violations: list[TrendViolation]


@dataclass
class Saliency:
    """Gradient x input saliency and occlusion of test lenses (evaluation.saliency); None without lenses."""

    n: int
    saliency_arc_fraction: float | None
    saliency_core_fraction: float | None
    arc_area_fraction: float | None  # the share a flat map would give the arc
    mean_score: float | None
    arc_occlusion_drop: float | None
    core_occlusion_drop: float | None


@dataclass
class SaliencyBin(Saliency):
    lo: float
    hi: float | None  # the open last theta_E bin


@dataclass
class ArcLocalisedFocus:
    min_arc_occlusion_drop: float
    max_core_to_arc_drop: float
    passed: bool


@dataclass
class ShortcutDiagnostics(Saliency):
    """Over all the lenses scored, per theta_E bin, and the plan's arc-localised focus on them."""

    theta_e_bins: list[SaliencyBin]
    core_radius_px: float
    arc_footprint_sigma: float
    arc_localised_focus: ArcLocalisedFocus


@dataclass
class PerturbedClass:
    """One class's mean |score change| over the centred and the offset variants, and per variant."""

    n: int
    mean_abs_change: float | None  # centred: what blocks
    offset_mean_abs_change: float | None  # WARN evidence
    by_variant: dict[str, float | None]


@dataclass
class CorePerturbation:
    """Does the score follow the LRG's core brightness (evaluation.saliency.core_perturbation)?"""

    per_class: dict[str, PerturbedClass]
    spread_sigma_px: list[float]  # per band: the LRGs' own core-brightness spread
    offsets_px: list[list[int]]
    max_mean_abs_change: float
    min_per_class: int
    measurable: bool
    passed: bool
    offset_passed: bool
    n_lrgs_for_spread: int | None = None


@dataclass
class RealismProbe:
    """Can a linear probe on the model's penultimate features tell injected from real lenses
    (evaluation.validation.realism_probe)? ``status`` says why a value is missing."""

    configured: bool  # real lenses are configured (real_validation.lenses_path)
    status: str
    lenses_path: str | None = None
    n_injected: int | None = None
    n_real: int | None = None
    min_real_lenses: int | None = None
    max_auc: float | None = None
    folds: int | None = None
    auc: float | None = None  # cross-validated, folds disjoint by galaxy
    ci95: list[float | None] = field(default_factory=lambda: [None, None])  # bootstrap
    measurable: bool = False  # at least min_real_lenses real lenses
    passed: bool | None = None  # auc <= max_auc; None when not computed


@dataclass
class ReliabilityBin:
    n: int
    mean_p: float  # mean predicted probability
    frac_pos: float  # observed fraction of lenses


@dataclass
class CalibrationError:
    """ECE over equal-mass bins (halo_core.evaluation.calibration.expected_calibration_error) and its bins."""

    ece: float
    n: int
    bins: list[ReliabilityBin]


@dataclass
class ScalingOnTest:
    """A scaling fitted on val (the fields of evaluation.calibration.Calibration) and its ECE on test."""

    a: float
    b: float
    train_prevalence: float
    n_fit: int
    method: str
    ece_after: CalibrationError


@dataclass
class CalibrationSummary(ScalingOnTest):
    """The scaling in use, the test ECE before it, and the other scaling fitted on the same val logits."""

    ece_before: CalibrationError
    alternative: ScalingOnTest


@dataclass
class ShiftSet:
    """One shift set scored by the model (evaluation.shift.shift_metrics), at its own operating threshold."""

    n: int
    n_lenses: int
    n_non_lenses: int
    auroc: float
    tpr_at_operating_fpr: float | None  # None: too few distinct non-lenses for the operating FPR
    threshold_at_operating_fpr: float | None
    measurable: bool
    ece_raw: float
    ece_calibrated: float
    auroc_drop: float | None  # from the test split; None where either side is not measurable
    tpr_drop: float | None
    reliability: list[ReliabilityBin]  # of the calibrated probabilities


@dataclass
class InDistribution:
    """The test split's own numbers, which each shift set's drop is measured from."""

    auroc: float
    tpr_at_operating_fpr: float | None
    ece_raw: float


@dataclass
class ShiftLimits:
    min_independent_tpr: float
    max_independent_drop: float
    max_stress_drop: float
    max_raw_ece: float


@dataclass
class ShiftSuite:
    """Test sets outside the training distribution (evaluation.shift), or why none was measured."""

    measurable: bool
    reason: str
    sets: dict[str, ShiftSet]
    in_distribution: InDistribution
    limits: ShiftLimits | None = None  # None when the suite is off
    seed: int | None = None
    n_per_class: int | None = None
    operating_fpr: float = LEGACY_OPERATING_FPR  # a suite stored before the operating point was configurable


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
    calibration: CalibrationSummary
    deployment_prevalence: float
    arc_snr_zero: MaskedArcs
    per_brick: PerBrickAuroc
    theta_e_bins: list[DetectionBin]
    theta_e_completeness_trend: CompletenessTrend
    psf_fwhm_bins: list[DetectionBin]
    arc_snr_bins: list[DetectionBin]
    training: dict  # best epoch, the per-epoch history (EpochRecord.to_dict), the plan's progress reports
    monitors: dict
    shortcut_diagnostics: ShortcutDiagnostics
    control_substitutes: dict | None  # None for a model without a control channel
    realism_probe: RealismProbe
    core_perturbation: CorePerturbation
    shift_suite: ShiftSuite | None = None  # None in a report written before the suite existed
    # the numerics the test split, and so the operating threshold, was scored in (halo_core.precision)
    precision: str = "fp32"
    plots: dict[str, str] = field(default_factory=dict)  # name -> path relative to the report folder

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EvaluationReport:
        """A stored report; one written while the operating point was fixed at 1e-2 reads in today's names."""
        return from_json(cls, {**d, "shift_suite": current_spelling(d["shift_suite"]) if d.get("shift_suite") else None})

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
    realism_probe: RealismProbe
    purity_target_check: PurityTarget
    recall_by_grading: dict[str, list[GradingRecall]] | None  # a real-sky set's lenses, per lenscat grading
    real_sky_set: RealSkyCounts | None
    refused: dict[str, int]  # cutouts refused, by reason
    plots: dict[str, str]  # name -> path relative to the report folder

    @property
    def operating(self) -> OperatingPoint:
        return next(p for p in self.operating_points if p.operating)

"""The evaluation report as a typed record: what report.json holds, which the checks, the verdict, the
registry and the CLI read by attribute (its sections stay JSON dicts, as written)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from halo_core import uris
from halo_core.metrics import LEGACY_OPERATING_FPR, current_spelling


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

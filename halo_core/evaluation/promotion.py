"""Promotion: the go / no-go verdict (docs/design.md §5 (verdict)) and champion / challenger, in one place.

The evaluation_report checks show the verdict criterion by criterion, and ``promoted_model`` and
``halo models promote`` recompute it from the same stored report.json and gates.json through
``go_no_go``, so no run selection (a UI "Materialize" of promoted_model alone) can skip it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

import numpy as np
from pydantic import ValidationError

from halo_core import uris
from halo_core.config import ChallengerConfig, HaloConfig
from halo_core.data.samples import load_split_samples
from halo_core.data.shards import dataset_spec
from halo_core.data.splits import lrg_ids
from halo_core.errors import HaloError
from halo_core.evaluation.results import Comparison, EvaluationReport, GatesReport, MetricComparison
from halo_core.metrics import OPERATING_TPR, TARGET_METRIC, auroc, tpr_at_fpr
from halo_core.model.checkpoint import load_model, load_sidecar, model_precision, model_spec, verified_weights
from halo_core.model.inference import predict_logits
from halo_core.model.network import pick_device
from halo_core.model.registry import (
    GATES,
    REPORT,
    VERSIONS,
    RegistryError,
    pointer_state,
    require_version,
    set_production,
)


class PromotionError(HaloError):
    """A model that must not become production: NO-GO, never evaluated, or evaluated as another model."""


@dataclass(frozen=True)
class Criterion:
    """One go/no-go criterion as a person reads it: what was observed, what was expected, on how many."""

    name: str
    passed: bool
    measurable: bool = True
    reason: str = ""  # why it could not be measured
    observed: float | str | None = None  # the number judged (or a short phrase where there is none)
    expected: str = ""  # the limit it was judged against, e.g. ">= 0.97"
    n: int | None = None  # the samples (lenses, bricks, files...) the observation rests on

    @property
    def blocks(self) -> bool:
        """A measured failure. An unmeasurable criterion warns (its check fails as WARN) but does not
        block: failing it would block promotion on absent evidence."""
        return self.measurable and not self.passed


def _unmeasured(name: str, reason: str, expected: str = "", n: int | None = None) -> Criterion:
    return Criterion(name, False, False, reason, "not measurable", expected, n)


def _test_auroc(cfg, r) -> Criterion:
    value, limit = r.metrics["auroc"], cfg.go_no_go.min_test_auroc
    return Criterion("test_auroc", value is not None and value >= limit, observed=value, expected=f">= {limit:g}",
                     n=r.metrics["n"])


def _precision_at_recall_0_90(cfg, r) -> Criterion:
    value, limit = r.metrics[TARGET_METRIC], cfg.go_no_go.min_precision_at_recall_0_90
    return Criterion("precision_at_recall_0_90", value is not None and value >= limit, observed=value,
                     expected=f">= {limit:g}", n=r.metrics["n"])


def _train_val_gap(cfg, r) -> Criterion:
    gap = r.monitors["train_val_gap"]
    return Criterion("train_val_gap", gap["passed"], observed=gap["value"], expected=f"|gap| < {gap['limit']:g}")


def _deployable(cfg, r) -> Criterion:
    return Criterion("deployable_without_control", not r.needs_control,
                     observed="needs the control stamp" if r.needs_control else "the stamp alone",
                     expected="the stamp alone")


def _brick_auroc_std(cfg, r) -> Criterion:
    b, g = r.per_brick, cfg.go_no_go
    expected = f"< {g.max_brick_auroc_std:g} over >= {g.min_bricks} bricks"
    if b.n_bricks < g.min_bricks:
        return _unmeasured("brick_auroc_std", f"{b.n_bricks} bricks have >= {b.min_per_class} test samples "
                                              f"of each class; the std needs {g.min_bricks}", expected, b.n_bricks)
    return Criterion("brick_auroc_std", b.std < g.max_brick_auroc_std, observed=b.std, expected=expected,
                     n=b.n_bricks)


def _theta_e_trend(cfg, r) -> Criterion:
    name, trend = "theta_e_completeness_non_decreasing", r.theta_e_completeness_trend
    expected, n = "0 bins below a smaller theta_E bin (Wilson 95 %)", sum(b.n for b in r.theta_e_bins)
    if not trend.measurable:
        return _unmeasured(name, f"{trend.n_bins_measured} theta_E bin(s) hold test lenses; a trend needs 2",
                           expected, n)
    return Criterion(name, not trend.violations, observed=len(trend.violations), expected=expected, n=n)


def _arc_snr_zero(cfg, r) -> Criterion:
    name, masked = "arc_snr_zero_scored_as_negative", r.arc_snr_zero
    limit = cfg.go_no_go.max_arc_snr_zero_accuracy_as_lens
    if not masked.n:
        return _unmeasured(name, "no arc_snr == 0 rows in the test split", f"< {limit:g}", 0)
    return Criterion(name, masked.accuracy_as_lens < limit, observed=masked.accuracy_as_lens,
                     expected=f"< {limit:g}", n=masked.n)


def _calibration_ece(cfg, r) -> Criterion:
    after, limit = r.calibration.ece_after, cfg.go_no_go.max_ece_after_calibration
    return Criterion("calibration_ece", after.ece <= limit, observed=after.ece, expected=f"<= {limit:g}", n=after.n)


def _arc_localised_focus(cfg, r) -> Criterion:
    d = r.shortcut_diagnostics
    focus = d.arc_localised_focus
    return Criterion("arc_localised_focus", focus.passed, observed=d.arc_occlusion_drop,
                     expected=f"arc drop >= {focus.min_arc_occlusion_drop:g}, core drop <= "
                              f"{focus.max_core_to_arc_drop:g} x arc", n=d.n)


def _core_perturbation(cfg: HaloConfig, r: EvaluationReport) -> Criterion:
    """Blocking: the centred variants only (the offset ones are WARN evidence: core_perturbation_offset)."""
    d, g = r.core_perturbation, cfg.go_no_go
    expected = f"<= {g.max_core_perturbation_change:g} per class (centred), n >= {g.core_perturbation_min_per_class}"
    n = min((v.n for v in d.per_class.values()), default=0)
    if n < g.core_perturbation_min_per_class:
        return _unmeasured("core_perturbation", f"fewer than {g.core_perturbation_min_per_class} test samples in a class",
                           expected, n)
    worst = max(v.mean_abs_change for v in d.per_class.values())
    return Criterion("core_perturbation", worst <= g.max_core_perturbation_change, observed=worst, expected=expected,
                     n=n)


def _independent_renderer_shift(cfg: HaloConfig, r: EvaluationReport) -> Criterion:
    suite, limits = r.shift_suite, cfg.shift
    d = suite.sets.get("independent") if suite and suite.measurable else None
    expected = f"TPR >= {limits.min_independent_tpr:g}, drop <= {limits.max_independent_drop:g}"
    if d is None or d.tpr_drop is None:
        why = suite.reason if suite else "the report predates the shift suite"
        return _unmeasured("independent_renderer_shift", why or
                           f"TPR at FPR {cfg.operating_fpr:g} not measurable here or on the test split", expected)
    return Criterion("independent_renderer_shift", d.tpr_at_operating_fpr >= limits.min_independent_tpr
                     and d.tpr_drop <= limits.max_independent_drop, observed=d.tpr_at_operating_fpr,
                     expected=expected, n=d.n)


# each go/no-go criterion of the evaluation report: (cfg, report) -> Criterion
REPORT_CRITERIA = {
    "test_auroc": _test_auroc,
    "precision_at_recall_0_90": _precision_at_recall_0_90,
    "train_val_gap": _train_val_gap,
    "deployable_without_control": _deployable,
    "brick_auroc_std": _brick_auroc_std,
    "theta_e_completeness_non_decreasing": _theta_e_trend,
    "arc_snr_zero_scored_as_negative": _arc_snr_zero,
    "calibration_ece": _calibration_ece,
    "arc_localised_focus": _arc_localised_focus,
    "core_perturbation": _core_perturbation,
    "independent_renderer_shift": _independent_renderer_shift,
}


def report_criteria(cfg: HaloConfig, report: EvaluationReport) -> dict[str, Criterion]:
    """The go/no-go criteria measured by the evaluation report, against ``cfg``'s thresholds."""
    return {name: judge(cfg, report) for name, judge in REPORT_CRITERIA.items()}


def gate_criteria(gates: GatesReport) -> dict[str, Criterion]:
    """What blocks among the data-level gates (gates.json): the selection null (docs/design.md §8 (trust)). The probes are
    evidence, and deployability is judged on the trained model (deployable_without_control)."""
    null = gates.selection_null
    return {"selection_null": Criterion(
        "selection_null", null.passed, observed=null.max_auc if null.informative else "not informative",
        expected=f"<= {null.threshold:g}", n=min((p.n for p in null.probes.values()), default=None))}


@dataclass(frozen=True)
class Verdict:
    go: bool
    criteria: dict[str, Criterion]

    @property
    def failed(self) -> list[str]:
        return [name for name, c in self.criteria.items() if c.blocks]

    def to_dict(self) -> dict:
        return {"go": self.go, "failed": self.failed, "criteria": {n: asdict(c) for n, c in self.criteria.items()}}


def go_no_go(cfg: HaloConfig, report: EvaluationReport, gates: GatesReport) -> Verdict:
    """GO when no measured criterion failed (the data-quality checks gate the dataset upstream)."""
    criteria = {**report_criteria(cfg, report), **gate_criteria(gates)}
    return Verdict(not any(c.blocks for c in criteria.values()), criteria)


def report_verdict(cfg: HaloConfig, report: EvaluationReport, gates: GatesReport | None) -> Verdict:
    """The verdict as far as ``report`` and ``gates`` tell it, for the report's banner: gates measured on
    other data (or not yet) leave the selection null unmeasured. Promotion requires both (require_go)."""
    if gates is not None and gates.data_fingerprint == report.data_fingerprint:
        return go_no_go(cfg, report, gates)
    criteria = {**report_criteria(cfg, report),
                "selection_null": _unmeasured("selection_null", "shortcut_gates not measured on this data yet")}
    return Verdict(not any(c.blocks for c in criteria.values()), criteria)


def require_go(cfg: HaloConfig, report: EvaluationReport | None, gates: GatesReport | None, model: dict) -> Verdict:
    """The verdict on ``model`` (its sha256, training hash, data fingerprint), or PromotionError when it
    is NO-GO, was never evaluated, or the report and gates describe another model or other data."""
    name = f"model {model['sha256'][:12]} (training hash {model['training_hash']}, data {model['data_fingerprint']})"
    if report is None:
        raise PromotionError(f"{name} was never evaluated: no report.json; materialize evaluation_report first")
    if report.model_sha256 != model["sha256"]:
        raise PromotionError(f"the evaluation report describes model {str(report.model_sha256)[:12]}, not {name}; "
                             "materialize evaluation_report for this model first")
    if gates is None or gates.data_fingerprint != report.data_fingerprint:
        raise PromotionError(f"the shortcut gates were not measured on the data the report evaluated "
                             f"({report.data_fingerprint}); materialize shortcut_gates first")
    verdict = go_no_go(cfg, report, gates)
    if not verdict.go:
        raise PromotionError(f"NO-GO for {name}: failed {', '.join(verdict.failed)}; it is not promoted")
    return verdict


def score_test_split(cfg: HaloConfig, dataset_dir: str, model_path: str, *, split: str = "test",
                     precision: str | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(labels, logits, distinct non-lens galaxies) of ``model_path`` on the test split (or ``split``) of
    ``dataset_dir``, in ``precision`` (default: the model's own); PromotionError when the model reads its
    input preprocessed differently from those shards."""
    model, sidecar = load_model(model_path)
    try:
        dataset_spec(dataset_dir).require_same(model_spec(sidecar), f"{model_path} vs {dataset_dir}")
    except HaloError as err:
        raise PromotionError(f"cannot score {model_path} on this test split: {err}") from None
    device = pick_device(cfg.device)
    shards, samples = load_split_samples(cfg, dataset_dir, split)
    logits = predict_logits(model.to(device), shards, samples, cfg.batch_size, device,
                            precision or model_precision(sidecar))
    meta = shards.meta.iloc[samples.rows]
    return samples.labels.astype(int), logits, int(lrg_ids(meta[samples.labels == 0]).nunique())


def compare(labels: np.ndarray, champion: np.ndarray, challenger: np.ndarray, n_distinct_negatives: int,
            cfg: ChallengerConfig, operating_fpr: float, seed: int = 0) -> Comparison:
    """Champion / challenger on one test split: per metric both values, the difference (challenger minus
    champion), the paired, class-stratified bootstrap CI half-width of that difference, the tolerance
    max(min_tolerance, half-width), and whether the challenger is not worse by more than it. The TPR at
    the operating FPR is left out, and said so, when the split has too few distinct non-lenses to measure it."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)

    def tpr(y, s):  # a resample repeats galaxies; the distinct count of the split stands for its measurability
        return tpr_at_fpr(y, s, operating_fpr, n_distinct_negatives)["tpr"]

    metrics = {"auroc": lambda y, s: auroc(y, s)}
    if tpr(labels, champion) is not None:
        metrics[OPERATING_TPR] = tpr
    diffs = {name: [] for name in metrics}
    for _ in range(cfg.bootstrap_resamples):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        for name, fn in metrics.items():
            diffs[name].append(fn(labels[idx], challenger[idx]) - fn(labels[idx], champion[idx]))
    lo, hi = (1 - cfg.ci) / 2, 1 - (1 - cfg.ci) / 2
    rows = {}
    for name, fn in metrics.items():
        a, b = fn(labels, champion), fn(labels, challenger)
        half = float(np.quantile(diffs[name], hi) - np.quantile(diffs[name], lo)) / 2
        tolerance = max(cfg.min_tolerance, half)
        rows[name] = MetricComparison(a, b, b - a, half, tolerance, b - a >= -tolerance)
    return Comparison(
        all(r.not_worse for r in rows.values()), n_test=len(labels), n_positives=len(pos), n_negatives=len(neg),
        n_distinct_negatives=n_distinct_negatives, ci=cfg.ci, resamples=cfg.bootstrap_resamples,
        operating_fpr=operating_fpr, metrics=rows, not_compared=[] if OPERATING_TPR in metrics else [
            f"{OPERATING_TPR} (FPR {operating_fpr:g}): {n_distinct_negatives} distinct non-lenses, it needs "
            f"{math.ceil(1 / operating_fpr)}"])


def promote(registry: str, version: str, reason: str) -> str | None:
    """`halo models promote`: re-derive GO / NO-GO from the version's stored report and gates with the
    thresholds of its own config (:func:`require_go`, as promoted_model does), then swap the registry's
    pointer compare-and-swap; returns the version it replaced. Repairs a corrupt pointer."""
    model = require_version(registry, version)
    expected = pointer_state(registry)
    card = load_sidecar(model)
    folder = uris.join(registry, VERSIONS, version)
    missing = [name for name in (REPORT, GATES) if not uris.exists(uris.join(folder, name))]
    if missing:
        raise RegistryError(
            f"version {version} holds no {' or '.join(missing)} (promoted by an older halo), so its verdict cannot "
            "be re-derived; re-evaluate its model: materialize evaluation_report, shortcut_gates and promoted_model "
            "for its profile")
    identity = {"sha256": hashlib.sha256(verified_weights(model, card)).hexdigest(),
                "training_hash": card["training_hash"], "data_fingerprint": card["data_fingerprint"]}
    try:
        cfg = HaloConfig.model_validate(card["config"])
    except (ValidationError, KeyError) as err:
        raise RegistryError(f"{model}: its card's config does not load in this halo ({str(err).splitlines()[0]}); "
                            "re-evaluate its model to promote it") from None
    require_go(cfg, EvaluationReport.read(uris.join(folder, REPORT)),
               GatesReport.read(uris.join(folder, GATES)), identity)
    return set_production(registry, version, reason, expected)

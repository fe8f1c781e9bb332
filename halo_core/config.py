"""One typed configuration for the whole product (docs/design.md §10 (config)): the seed plan's keys, spelled as the plan
spells them, plus the review's.

Presets are YAML files in ``halo_core/presets``; a preset may name a ``base`` preset and override a
few of its keys. A user's file (``--config FILE.yaml``) is the plan's dict as it is, halo's keys, or
both, with an optional ``base``. Unknown keys and wrong types are errors that name the key and the file;
a plan key halo cannot honour is refused with the reason.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from halo_core.errors import ConfigError

PRESETS_DIR = Path(__file__).parent / "presets"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AugmentationConfig(_Strict):
    """D4 augmentation; when a sample holds stamp and control, both get the same transform."""

    random_rotation: bool = True  # by a multiple of 90 degrees
    random_flip: bool = True
    random_transpose: bool = True


class SchedulerConfig(_Strict):
    """CosineAnnealingWarmRestarts, stepped once per epoch (restarts fall at T_0, T_0 + T_0*T_mult, ...)."""

    type: Literal["CosineAnnealingWarmRestarts"] = "CosineAnnealingWarmRestarts"
    T_0: int = Field(10, ge=1)
    T_mult: int = Field(2, ge=1)
    eta_min: float = Field(1e-6, ge=0)


class EarlyStoppingConfig(_Strict):
    monitor: Literal["val_loss", "val_auroc"] = "val_loss"
    mode: Literal["min", "max"] = "min"
    patience: int = Field(10, ge=1)
    min_delta: float = Field(1e-4, ge=0)


BLOB_COLUMNS = ("stamp_npz", "ctrl_stamp_npz")


class InputKeysConfig(_Strict):
    """The plan's ``<column>.<npz key>`` names of the g, r, z bands of each blob column (docs/design.md §3 (data contract))."""

    positive: tuple[str, str, str] = ("stamp_npz.image_g", "stamp_npz.image_r", "stamp_npz.image_z")
    control: tuple[str, str, str] = ("ctrl_stamp_npz.image_g", "ctrl_stamp_npz.image_r", "ctrl_stamp_npz.image_z")

    @model_validator(mode="after")
    def _name_their_column(self) -> "InputKeysConfig":
        for role, column in zip(("positive", "control"), BLOB_COLUMNS):
            wrong = [k for k in getattr(self, role) if k.partition(".")[0] != column or not k.partition(".")[2]]
            if wrong:
                raise ValueError(f"{role} keys {wrong}: each must be {column}.<npz key>, e.g. {column}.image_g")
        return self

    def npz_keys(self) -> dict[str, tuple[str, ...]]:
        """Blob column -> its three npz keys, in g, r, z order."""
        return {column: tuple(k.partition(".")[2] for k in getattr(self, role))
                for role, column in zip(("positive", "control"), BLOB_COLUMNS)}


def stamp_keys(input_keys) -> tuple[str, ...]:
    """The npz keys of the stamp (``stamp_npz``) under a model's stored ``input_keys``: what scoring a
    real galaxy reads."""
    return InputKeysConfig.model_validate(input_keys).npz_keys()["stamp_npz"]


# The plan's `metrics` names. `precision@R` is precision at the score threshold where recall reaches R,
# and `recall@P` is recall at the threshold where precision reaches P: the plan states its own target
# as "precision at 90 % recall", so a bare number after `precision@` is the recall held fixed, and the
# rate after `recall@` is read the same way (the other rate is fixed). halo_core.metrics computes them.
RATE_AT = re.compile(r"^(precision|recall)@(0\.\d+|1\.0)$")
PLAIN_METRICS = ("auroc", "auprc", "accuracy")
# the plan's diagnostics, computed by halo_core.evaluation.report; the go/no-go table (docs/design.md §5 (verdict)) needs all three
DIAGNOSTICS = ("arc_snr_0_accuracy", "per_brick_auroc", "theta_e_binned_auroc")


class QualityCutsConfig(_Strict):
    """Rows above these masked-pixel fractions are dropped (and counted) by the filter."""

    # 0 keeps only unmasked rows; 1 would drop nothing and is refused (remove the cut explicitly instead)
    max_bad_pixel_frac: float = Field(0.2, ge=0, lt=1)
    max_wise_brightmask_frac: float = Field(0.2, ge=0, lt=1)


class SimulationConfig(_Strict):
    """Size of the embedded synthetic dataset (docs/design.md §4 (simulator)), used when ``train_path`` is empty. Every
    preset but smoke gets the same data, so their verdicts compare on one dataset."""

    # 4,800 train pairs: the demo reaches test AUROC 0.99 on them in ~5 min on 2 CPU cores. 320 test
    # LRGs give > 100 distinct non-lens galaxies, so TPR at FPR 1e-2 is measurable.
    n_lrg: dict[Literal["train", "val", "test"], Annotated[int, Field(ge=1)]] = {"train": 1200, "val": 100, "test": 320}

    @field_validator("n_lrg")
    @classmethod
    def _every_split_counted(cls, v: dict[str, int]) -> dict[str, int]:
        missing = [s for s in ("train", "val", "test") if s not in v]
        if missing:  # a split without LRGs would fail deep inside paired_stamps, not here naming the key
            raise ValueError(f"missing {', '.join(missing)}: n_lrg counts the LRGs of train, val and test")
        return v
    injections_per_lrg: int = Field(4, ge=1)
    # the real catalogue has ~150 LRGs per brick (median of 44 bricks); 40 keeps >= 5 test bricks with
    # >= 20 lenses and 20 non-lenses each, so the per-brick AUROC spread is measurable
    lrgs_per_brick: int = Field(40, ge=1)
    seed: int = Field(0, ge=0)
    # wider sources, neighbours, stars, LRG profiles, PSF, noise, sky gradients, masked columns (simulate/
    # dataset.py DR_*): a model trained on one simulator's particulars lost 0.07 AUROC on another (docs/design.md §8 (trust))
    domain_randomization: bool = True


class InjectionConfig(_Strict):
    """Arcs injected into the real cutouts of ``lrg_cutouts_path`` (halo_core.simulate.injection); whole bricks
    go to one split, so the fractions are of bricks."""

    injections_per_galaxy: int = Field(4, ge=1, le=100)
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5)
    seed: int = 0


class RealValidationConfig(_Strict):
    """Scoring real known lenses and real non-lenses (halo_core.evaluation.validation); empty paths = skipped."""

    # real lens cutouts (.npz files / folder, or parquet with a cutout column); `shipped` = the six real DR10
    # lens candidates inside halo (halo_core/data/real_dr10_cutouts)
    lenses_path: str = ""
    nonlenses_path: str = ""  # real non-lens cutouts, same layouts
    known_lens_radius_arcsec: float = Field(2.0, gt=0, le=30)
    purity_target: float = Field(0.75, gt=0, le=1)  # the plan's sim-to-real purity target, shown beside the purity
    # realism gate: a linear probe on the model's penultimate features, injected vs real lenses
    max_realism_auc: float = Field(0.9, ge=0.5, le=1.0)  # above it, injection completeness is a lower bound
    min_real_lenses: int = Field(20, ge=2)  # fewer: the probe AUC is reported as indicative, not measured
    realism_folds: int = Field(5, ge=2, le=20)


# the Legacy Survey cutout service (halo_core.survey.cutouts): defaults of `halo cutouts` and of real_sky
DEFAULT_BASE_URL = "https://www.legacysurvey.org/viewer"
DEFAULT_LAYER = "ls-dr10"
DEFAULT_SIZE = 101  # the project's real cutouts: the 64x64 stamp plus room for the sky annulus
DEFAULT_WORKERS = 4  # a polite load on a public service; the viewer throttles heavier clients with 429


class RealSkyConfig(_Strict):
    """Real sky from the Legacy Survey cutout service (halo_core.survey.cutouts): the `real_lrg_cutouts`
    asset fetches ``lrg_catalog``'s cutouts into ``lrg_cutouts_path``; with ``validation`` on,
    `real_validation` takes its non-lenses from those cutouts' test-split bricks and reports its lenses
    (real_validation.lenses_path, e.g. `halo cutouts --lenscat`) per lenscat grading."""

    lrg_catalog: str = ""  # CSV or parquet of LRG positions (ra, dec; optional id, brickname)
    base_url: str = DEFAULT_BASE_URL
    layer: str = DEFAULT_LAYER
    size: int = Field(DEFAULT_SIZE, ge=64, le=512)
    workers: int = Field(DEFAULT_WORKERS, ge=1, le=32)
    validation: bool = False
    gradings: tuple[Literal["confident", "probable"], ...] = Field(("confident", "probable"), min_length=1)
    # an LRG this close to a known lens (lenscat, any grading) is not a validation non-lens
    nonlens_min_separation_arcsec: float = Field(5.0, gt=0, le=60)


class GatesConfig(_Strict):
    """Shortcut gates: cross-validated logistic regressions on the model's input (docs/design.md §1 (domain) fact 3)."""

    n_samples: int = Field(2000, ge=20)  # per gate, drawn class-balanced from the train split
    folds: int = Field(5, ge=2)
    max_auc: float = Field(0.65, ge=0.5, lt=1)  # above this a linear model on the feature alone separates the classes
    # max_auc flags a data-level probe (reported evidence, a WARN; docs/design.md §8 (trust)). What blocks is the
    # selection null: the probes on arc-free inputs (positives' own controls vs negatives);
    # at n = 2000 with LRG-grouped folds a null AUC scatters by ~0.02, so 0.55 is ~2.5 sigma
    null_n_samples: int = Field(2000, ge=20)
    max_null_auc: float = Field(0.55, ge=0.5, lt=1)


class GoNoGoConfig(_Strict):
    """Thresholds of the go/no-go table (docs/design.md §5 (verdict))."""

    # bounds: an AUROC limit below 0.5 or a fraction limit of 1 would pass anything (docs/design.md §5 (verdict):
    # a gate that cannot fail is a defect); a limit of 0 (or an AUROC of 1) could never pass
    min_test_auroc: float = Field(0.97, ge=0.5, lt=1)
    min_precision_at_recall_0_90: float = Field(0.90, gt=0, lt=1)
    # val minus train BCE loss, in nats; a one-epoch model on a handful of galaxies reaches 13
    max_train_val_gap: float = Field(0.1, gt=0, le=100)
    max_quarantine_frac: float = Field(0.02, gt=0, lt=1)  # real DR10 pairs: 0.08 % NaN; 25x that means a broken dump
    max_brick_auroc_std: float = Field(0.05, gt=0, lt=0.5)  # the std of values in [0, 1] is at most 0.5
    max_grad_norm: float = Field(10.0, gt=0)  # largest per-step gradient norm of a run (the plan's §3.1 monitor)
    # each epoch's LR against CosineAnnealingWarmRestarts' closed form, relative: float rounding only
    max_lr_schedule_error: float = Field(1e-6, gt=0, le=1e-2)
    # each split's constructed samples must hold at least this share of the rarer class: below it,
    # AUROC and the early-stopping val loss rest on a handful of one class
    min_class_share: float = Field(0.25, gt=0, le=0.5)
    # a brick's AUROC counts only with this many test samples of each class: at 5 per class the
    # sampling scatter of one AUROC alone exceeds 0.05, so the std would measure noise
    brick_min_per_class: int = Field(20, ge=2)
    min_bricks: int = Field(5, ge=2)  # a std over fewer qualifying bricks is not reported as a verdict
    max_arc_snr_zero_accuracy_as_lens: float = Field(0.60, gt=0, lt=1)  # masked arcs must look like negatives
    max_ece_after_calibration: float = Field(0.05, gt=0, lt=1)
    # the plan's "arc-localised focus": occluding the arc outside the core costs at least this much mean score,
    # occluding the core at most this share of it (for theta_E < 0.75" the arc covers the core, so
    # an absolute core limit would fail an honest arc finder on its smallest lenses)
    min_arc_occlusion_drop: float = Field(0.30, ge=0, lt=1)  # a drop of mean probability; 0 still fails a rise
    max_core_to_arc_occlusion_drop: float = Field(0.5, gt=0, le=1)  # a share of the arc drop
    # core perturbation (docs/design.md §8 (trust)): PSF-shaped light of the LRGs' own core-brightness spread added to and
    # removed from r < 5 px moves the mean score of each class by at most this, over at least n per class
    max_core_perturbation_change: float = Field(0.05, gt=0, lt=1)
    core_perturbation_min_per_class: int = Field(500, ge=1)


class ChallengerConfig(_Strict):
    """Champion / challenger before `production` moves: both models scored on the same newest test
    split; the challenger is refused when worse by more than max(min_tolerance, the bootstrap CI
    half-width of the difference), so two equally good retrains do not block each other by chance."""

    min_tolerance: float = Field(0.01, ge=0, le=1)
    ci: float = Field(0.95, gt=0, lt=1)
    bootstrap_resamples: int = Field(200, ge=20, le=10000)  # paired resamples of the test split


class CatalogConfig(_Strict):
    """The candidate catalogue (asset `candidate_catalog`, `halo catalog`) and its checks."""

    batch_size: int = Field(256, ge=1)  # cutouts per model call in a scoring actor
    gallery_top_n: int = Field(50, ge=1, le=10_000)
    # WARN when the share above the operating threshold is more than this factor off the share the
    # deployment prevalence predicts (prevalence x TPR + (1 - prevalence) x FPR), either way
    max_share_above_ratio: float = Field(3.0, gt=1)
    max_binary_score_frac: float = Field(0.5, ge=0, le=1)  # scores at exactly 0 or 1: a saturated model
    max_refused_frac: float = Field(0.05, ge=0, le=1)


class SelectionFunctionConfig(_Strict):
    """Injection-recovery grid of the selection function: every combination of the axes is a cell.
    The default is the embedded demo's small grid (24 cells, ~1 min on 2 cores with Ray's start)."""

    theta_e_arcsec: tuple[float, ...] = Field((0.75, 1.25, 2.0), min_length=1)
    psf_fwhm_arcsec: tuple[float, ...] = Field((1.1, 1.5), min_length=1)  # r band; g and z scale with it
    psfdepth_r_mag: tuple[float, ...] = Field((24.3, 24.9), min_length=1)  # 5-sigma point-source depth
    source_r_mag: tuple[float, ...] = Field((21.0, 22.5), min_length=1)  # unlensed source
    injections_per_cell: int = Field(20, ge=1)
    seed: int = 0


class ShiftConfig(_Strict):
    """The shift suite of evaluation_report (halo_core/shift.py): test sets outside the training distribution.
    Fixed seed; never used for training or for choosing parameters."""

    enabled: bool = True
    # 200 lenses and 200 non-lenses per set: >= 100 distinct negatives make TPR at FPR 1e-2 measurable
    n_per_class: int = Field(200, ge=100)
    seed: int = 2026
    min_independent_tpr: float = Field(0.6, gt=0, lt=1)  # blocking: TPR at FPR 1e-2 on the independent renderer's set
    max_independent_drop: float = Field(0.2, gt=0, lt=1)  # blocking: its drop from the in-distribution TPR
    max_stress_drop: float = Field(0.2, gt=0, lt=1)  # WARN per stress set
    max_raw_ece: float = Field(0.05, gt=0, lt=1)  # WARN: uncalibrated ECE on any shift set


# Keys of the plan with one value that works here: (that value, why any other is refused).
FIXED_PLAN_VALUES = {
    "num_classes": (1, "BCEWithLogitsLoss trains one logit per sample; num_classes must be 1"),
    "pretrained": (False, "no pretrained weights can be downloaded here, and ImageNet weights expect 3 RGB channels; "
                          "the plan trains from scratch (false)"),
    "noise_augmentation": (False, "not built; halo's augmentation is the D4 group only (set false)"),
    "stamp_size": (64, "the paired dataset's stamps are 64x64 pixels (docs/design.md §3 (data contract)); stamp_size must be 64"),
}


class HaloConfig(_Strict):
    """Everything one training run needs. Every key of the Gen5-Prime plan's dict, spelled as the plan
    spells it (``presets/gen5_prime.yaml``), plus halo's own additions under halo's names."""

    # model
    model_name: Literal["resnet18"] = "resnet18"
    input_channels: Literal[3, 6] = 3
    num_classes: int = 1  # one logit, as BCEWithLogitsLoss needs
    pretrained: bool = False
    # data: train_path alone is a root holding all three splits (docs/design.md §3 (data contract)); with val_path and test_path
    # (the plan's form) each names one split. Empty train_path = synthesize the embedded dataset.
    train_path: str = ""
    val_path: str = ""
    test_path: str = ""
    input_keys: InputKeysConfig = InputKeysConfig()
    stamp_size: int = 64
    # real LRG cutouts (npz files / folder / parquet, local or s3://) to inject arcs into instead of
    # synthesizing; the third paired_stamps mode (docs/design.md §3 (data contract))
    lrg_cutouts_path: str = ""
    injection: InjectionConfig = InjectionConfig()
    # real cutouts the candidate catalogue scores (parquet with stamp_npz / npz folders, local or S3)
    score_path: str = ""
    exclude_bricks: tuple[str, ...] = ("0460m800", "3252p267")
    quality_cuts: QualityCutsConfig = QualityCutsConfig()
    simulation: SimulationConfig = SimulationConfig()
    # samples and preprocessing (the review's additions); sample_construction defaults from
    # input_channels: 6 channels are the plan's (stamp, ctrl) input, 3 the deployable one
    sample_construction: Literal["paired_6ch", "ctrl_negative", "unpaired"] = "unpaired"
    normalization: Literal["per_sample_robust", "residual_radial"] = "residual_radial"
    clip_range: tuple[float, float] = (-5.0, 20.0)
    annulus_min_radius_px: float = Field(20.0, gt=0, lt=32)  # outer annulus for residual_radial statistics, at 64 px stamps
    augmentation: AugmentationConfig = AugmentationConfig()
    noise_augmentation: bool = False
    # optimisation
    batch_size: int = Field(256, ge=1)
    epochs: int = Field(50, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    optimizer: Literal["AdamW"] = "AdamW"
    weight_decay: float = Field(1e-4, ge=0)
    scheduler: SchedulerConfig = SchedulerConfig()
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    loss: Literal["BCEWithLogitsLoss"] = "BCEWithLogitsLoss"
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    class_weights: tuple[PositiveFloat, PositiveFloat] | None = None  # (negative, positive)
    metrics: tuple[str, ...] = ("auroc", "auprc", "accuracy", "precision@0.95", "recall@0.95")
    diagnostic_metrics: tuple[str, ...] = DIAGNOSTICS
    # checkpoints and logging
    checkpoint_dir: str = ""  # root under which keyed run folders go; empty = <root>/<profile>/trained_model
    save_every_n_epochs: int = Field(5, ge=1)
    save_best: bool = True
    # start from the production model's weights instead of a random init (off: a retrain is then
    # reproducible from its config and data alone); the run key then names the starting model too
    warm_start: bool = False
    log_to_wandb: bool = False
    wandb_project: str = "dark_halo_scope"
    wandb_run_name: str = ""
    # execution
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # On an H200 one process feeds the trainer 44k samples/s against the bare step's 95k (batch 1024,
    # benchmarks.trainer_overhead); workers restart every epoch, and in 10-step epochs 8 of them were
    # slower (26k). On real-size epochs on a GPU node, try 8.
    num_workers: int = Field(0, ge=0)
    # filtered_dataset decodes and preprocesses its files in parallel Ray tasks (local Ray on the step's
    # cores, or HALO_RAY_ADDRESS); the shards are byte-identical to the single-process build
    filter_on_ray: bool = True
    nproc_per_node: int = Field(1, ge=1)  # >1: the trained_model asset runs the trainer under torchrun (DDP)
    channels_last: bool = True  # faster for ResNet18 at 64x64 on CPU here, and the cuDNN fast path
    # the network's numerics in training and inference (halo_core.precision): auto = bf16 autocast on CUDA
    # and on CPUs with AMX-BF16 / AVX512-BF16, else fp32; the training hash holds the resolved value
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile_model: bool = False  # torch.compile the training forward/backward (GPU runs; minutes to compile)
    # evaluation and promotion
    deployment_prevalence: float = Field(1e-3, gt=0, lt=1)
    # `halo score` refuses a cutout with a non-finite pixel in its central 10x10 or more than this share
    # of non-finite pixels overall (its row says why): 1 % is a few masked pixels, not a missing band
    max_nonfinite_pixel_frac: float = Field(0.01, gt=0, lt=1)
    # fitted on val and used downstream; the report shows the other one beside it. Temperature scaling
    # has one parameter and cannot move the decision threshold: the safer fit on a small val split
    calibration: Literal["platt", "temperature"] = "platt"
    gates: GatesConfig = GatesConfig()
    go_no_go: GoNoGoConfig = GoNoGoConfig()
    challenger: ChallengerConfig = ChallengerConfig()
    real_validation: RealValidationConfig = RealValidationConfig()
    real_sky: RealSkyConfig = RealSkyConfig()
    # a grades CSV (`halo grades import`): galaxies graded "not a lens" join the train split as negatives
    graded_negatives_path: str = ""
    # the operating threshold (docs/design.md §5 (verdict)): the calibrated probability at this FPR on the synthetic test
    # split, used by real validation, the candidate catalogue and the selection function (real validation
    # reports the other two of 1e-2, 1e-3, 1e-4 beside it where measurable)
    operating_fpr: Literal[1e-2, 1e-3, 1e-4] = 1e-2
    catalog: CatalogConfig = CatalogConfig()
    selection_function: SelectionFunctionConfig = SelectionFunctionConfig()
    shift: ShiftConfig = ShiftConfig()

    @model_validator(mode="before")
    @classmethod
    def _samples_follow_channels(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "sample_construction" not in data and data.get("input_channels") == 6:
            return {**data, "sample_construction": "paired_6ch"}
        return data

    # The plan's keys halo cannot honour here are refused with the reason, never silently ignored.
    @field_validator(*FIXED_PLAN_VALUES)
    @classmethod
    def _fixed_plan_value(cls, v: Any, info: ValidationInfo) -> Any:
        value, why = FIXED_PLAN_VALUES[info.field_name]
        if v != value:
            raise ValueError(f"{json.dumps(v)}: {why}")
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics_computed(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in v if m not in PLAIN_METRICS and not RATE_AT.match(m)]
        if unknown:
            raise ValueError(f"{unknown} not computed; use {', '.join(PLAIN_METRICS)}, precision@R "
                             "(precision at recall R) or recall@P (recall at precision P), e.g. precision@0.90")
        return v

    @field_validator("diagnostic_metrics")
    @classmethod
    def _diagnostics_computed(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if sorted(set(v)) != sorted(DIAGNOSTICS):
            raise ValueError(f"{list(v)}: halo computes exactly {list(DIAGNOSTICS)}; each decides a go/no-go "
                             "check (docs/design.md §5 (verdict)), so none can be dropped, and no other is built")
        return v

    @model_validator(mode="after")
    def _channels_match_samples(self) -> "HaloConfig":
        want = 6 if self.sample_construction == "paired_6ch" else 3
        if self.input_channels != want:
            raise ValueError(
                f"input_channels={self.input_channels} but sample_construction={self.sample_construction!r} "
                f"builds {want}-channel samples"
            )
        if self.train_path and self.lrg_cutouts_path:
            raise ValueError("train_path and lrg_cutouts_path are both set: paired_stamps reads an external "
                             "paired dataset or injects into real cutouts, not both")
        if (self.real_sky.lrg_catalog or self.real_sky.validation) and not self.lrg_cutouts_path:
            raise ValueError("real_sky.lrg_catalog and real_sky.validation need lrg_cutouts_path: the folder the "
                             "LRG cutouts are fetched into and read from")
        if self.clip_range[0] >= self.clip_range[1]:
            raise ValueError(f"clip_range {self.clip_range}: low must be below high")
        if bool(self.val_path) != bool(self.test_path) or (self.val_path and not self.train_path):
            raise ValueError("val_path and test_path name one split each: set both, with train_path, or neither "
                             "(train_path alone is a root holding all three splits)")
        return self

    @property
    def split_paths(self) -> dict[str, str] | None:
        """Split -> its own location when the plan's three paths are set; None when train_path is a root."""
        return {"train": self.train_path, "val": self.val_path, "test": self.test_path} if self.val_path else None

    @property
    def needs_control_at_inference(self) -> bool:
        """True when the model's input includes the control stamp, which a real galaxy does not have."""
        return self.input_channels == 6

    def config_hash(self) -> str:
        """Everything, for provenance."""
        return _hash(self.model_dump(mode="json"))

    def training_hash(self) -> str:
        """The weight-determining keys alone (WEIGHT_KEYS), ``precision`` as resolved on this machine (an
        ``auto`` run in bf16 and one in fp32 are different runs); with the data fingerprint it keys a
        training run (docs/design.md §9 (run keys))."""
        return _hash({**self.model_dump(mode="json", include=WEIGHT_KEYS), "precision": self.resolved_precision()})

    def resolved_precision(self) -> str:
        """``precision`` with ``auto`` decided for the device this config picks here."""
        from halo_core import precision

        return precision.resolve(self.precision, self.device)


# Every top-level key, classified (tests/core/test_config.py fails on an unclassified one).
# The trainer's choices: changing one trains a new model.
WEIGHT_KEYS = frozenset({
    "model_name", "input_channels", "sample_construction", "augmentation", "batch_size", "epochs",
    "learning_rate", "optimizer", "weight_decay", "scheduler", "early_stopping", "loss", "label_smoothing",
    "class_weights", "save_best",  # which epoch's weights become model.pt
    "seed", "warm_start",
    "nproc_per_node",  # DDP deals batches to ranks: the effective batch is nproc x batch_size
    "precision",  # bf16 and fp32 steps round differently, so they end in different weights
    "num_classes", "pretrained", "noise_augmentation",  # the plan's; only the values halo can honour load
})
# What the filtered dataset is made of: they change the data fingerprint (shards + PreprocessSpec),
# which keys the run beside the training hash, so a path never moves the training folder.
DATA_KEYS = frozenset({
    "train_path", "val_path", "test_path", "stamp_size", "input_keys", "exclude_bricks", "quality_cuts", "simulation",
    "normalization", "clip_range", "lrg_cutouts_path", "injection",
    "annulus_min_radius_px",
    "graded_negatives_path",  # graded "not a lens" galaxies join the train split
})
# Neither: evaluation, promotion, reporting, tracking, where files go, and how fast the same maths runs
# (device, loader workers, memory format and compilation change float rounding, not the model trained).
NON_WEIGHT_KEYS = frozenset({
    "metrics", "diagnostic_metrics", "checkpoint_dir", "save_every_n_epochs", "log_to_wandb", "wandb_project",
    "wandb_run_name", "device", "num_workers", "channels_last", "compile_model", "deployment_prevalence",
    "calibration", "gates", "go_no_go", "challenger", "max_nonfinite_pixel_frac", "real_validation",
    # where the filter runs and what is scored after training never change the weights
    "filter_on_ray", "score_path", "operating_fpr", "catalog", "selection_function", "shift",
    "real_sky",  # where cutouts are fetched from and how real validation is built; their pixels are lrg_cutouts_path's
})


def _hash(data: dict) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any],
               defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``overrides`` on top of ``base`` at every depth. Where ``base`` lacks a mapping an override
    reaches into, ``defaults`` (halo's own, :func:`apply_overrides`) stands in for it, so
    ``simulation.n_lrg.train=3600`` keeps ``val`` and ``test`` even when the preset never names them."""
    merged = dict(base)
    defaults = defaults or {}
    for key, value in overrides.items():
        below = merged.get(key, defaults.get(key))
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            sub = defaults.get(key)
            merged[key] = deep_merge(below, value, sub if isinstance(sub, Mapping) else None)
        else:
            merged[key] = value
    return merged


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``--set`` overrides merged into a preset's or file's dict at every depth (see :func:`deep_merge`);
    top-level keys an override does not reach stay absent, so defaults that follow other keys
    (``sample_construction`` from ``input_channels``) still do."""
    return deep_merge(data, overrides, HaloConfig().model_dump(mode="json"))


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise ConfigError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
            seen.add(key)
        return super().construct_mapping(node, deep)


def _yaml_value(text: str) -> Any:
    """YAML ``text`` parsed, duplicate keys refused; a syntax error is one line (ConfigError) naming where."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ConfigError(f"not valid YAML{where}: {getattr(err, 'problem', None) or err}") from None


def parse_overrides(assignments: list[str]) -> dict[str, Any]:
    """``["epochs=2", "scheduler.T_0=5"]`` -> ``{"epochs": 2, "scheduler": {"T_0": 5}}`` (values are YAML;
    ``train_path=`` with nothing after ``=`` is the empty string, ``null`` is None)."""
    out: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. epochs=2 or scheduler.T_0=5")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part} was set to a value by an earlier --set, not to keys")
        try:
            node[leaf] = _yaml_value(raw) if raw else ""
        except ConfigError as err:
            raise ConfigError(f"--set {item!r}: {err}") from None
    return out


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def check_preset_name(name: str) -> str:
    """``name`` if it is one of the package's presets. A preset name becomes a path component of every
    artifact (``<root>/<preset>/<asset>``), so a path (``../x``, ``/etc/x``) is refused, never opened."""
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(preset_names())}; "
                          "a preset is a name, not a path)")
    return name


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        data = _yaml_value(path.read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise ConfigError(f"{path}: cannot read a YAML config ({err.strerror or type(err).__name__})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start} is {err.object[err.start]:#04x}); "
                          "save the config as UTF-8") from None
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config is a mapping of config keys, got {type(data).__name__}")
    return data


def _preset_dict(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    path = PRESETS_DIR / f"{check_preset_name(name)}.yaml"
    if name in seen:
        raise ConfigError(f"{path}: preset base cycle {' -> '.join((*seen, name))}")
    data = _read_mapping(path)
    base = data.pop("base", None)
    return deep_merge(_preset_dict(base, (*seen, name)), data) if base else data


def _validate(data: Mapping[str, Any], source: str) -> HaloConfig:
    try:
        return HaloConfig.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<config>'}: {e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()
        )
        raise ConfigError(f"{source}: {problems}") from None


def load_preset(name: str, overrides: Mapping[str, Any] | None = None) -> HaloConfig:
    """Preset ``name`` with ``overrides`` merged on top; raises ConfigError naming the key at fault."""
    return _validate(apply_overrides(_preset_dict(name), overrides or {}),
                     f"preset {name!r} ({PRESETS_DIR / (name + '.yaml')})")


def load_config_file(path: str | Path, overrides: Mapping[str, Any] | None = None) -> HaloConfig:
    """A user's YAML file: the plan's dict as it is, halo's own keys, or both. Keys it leaves out take
    halo's defaults, or those of the preset its optional ``base`` key names."""
    path = Path(path)
    data = _read_mapping(path)
    base = data.pop("base", None)
    merged = deep_merge(_preset_dict(base) if base else {}, data)
    return _validate(apply_overrides(merged, overrides or {}), str(path))


def load_config(preset: str = "recommended", config_path: str | None = None,
                overrides: Mapping[str, Any] | None = None) -> HaloConfig:
    """The one entry point of the CLI, the trainer and the Dagster resource: ``config_path`` when given,
    else the preset by name, with ``overrides`` (``--set``) on top."""
    return load_config_file(config_path, overrides) if config_path else load_preset(preset, overrides)


def profile_name(config_path: str | Path, taken: Mapping[str, str] | None = None) -> str:
    """The profile of a run from a user's file (docs/design.md §9 (run keys)): the file's stem, plus the first 8 hex digits
    of its content's sha256 when the stem is a preset's name or ``taken`` (profile -> resolved path of
    the file that owns it) gives the stem to another file. Never contains a path separator."""
    path = Path(config_path)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem).strip(".") or "config"
    owner = (taken or {}).get(stem)
    if stem in preset_names() or (owner is not None and Path(owner).resolve() != path.resolve()):
        return f"{stem}-{hashlib.sha256(path.read_bytes()).hexdigest()[:8]}"
    return stem


def config_args(p: argparse.ArgumentParser, default_preset: str = "recommended") -> None:
    """--preset NAME or --config FILE.yaml, then --set overrides: the same on every command and torchrun."""
    which = p.add_mutually_exclusive_group()
    which.add_argument("--preset", default=default_preset,
                       help=f"one of: {', '.join(preset_names())} (default {default_preset})")
    which.add_argument("--config", metavar="FILE.yaml",
                       help="a YAML config: the plan's dict as it is and/or halo's keys (`base: PRESET` optional)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (YAML value), e.g. --set epochs=2 --set scheduler.T_0=5")

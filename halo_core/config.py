"""One typed configuration for the whole product (DESIGN §2): the seed plan's keys plus the review's.

Presets are YAML files in ``halo_core/presets``; a preset may name a ``base`` preset and override a
few of its keys. Unknown keys and wrong types are errors that name the key and the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from halo_core.errors import ConfigError

PRESETS_DIR = Path(__file__).parent / "presets"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AugmentationConfig(_Strict):
    """D4 augmentation; when a sample holds stamp and control, both get the same transform."""

    rot90: bool = True
    flip: bool = True
    transpose: bool = True


class SchedulerConfig(_Strict):
    """CosineAnnealingWarmRestarts, stepped once per epoch (restarts fall at T_0, T_0 + T_0*T_mult, ...)."""

    name: Literal["cosine_warm_restarts"] = "cosine_warm_restarts"
    T_0: int = Field(10, ge=1)
    T_mult: int = Field(2, ge=1)
    eta_min: float = Field(1e-6, ge=0)


class EarlyStoppingConfig(_Strict):
    monitor: Literal["val_loss", "val_auroc"] = "val_loss"
    mode: Literal["min", "max"] = "min"
    patience: int = Field(10, ge=1)
    min_delta: float = Field(1e-4, ge=0)


class QualityCutsConfig(_Strict):
    """Rows above these masked-pixel fractions are dropped (and counted) by the filter."""

    max_bad_pixel_frac: float = 0.2
    max_wise_brightmask_frac: float = 0.2


class SimulationConfig(_Strict):
    """Size of the embedded synthetic dataset (DESIGN §4), used when ``train_path`` is empty. Every
    preset but smoke gets the same data, so their verdicts compare on one dataset."""

    # 4,800 train pairs: the demo reaches test AUROC 0.99 on them in ~5 min on 2 CPU cores. 320 test
    # LRGs give > 100 distinct non-lens galaxies, so TPR at FPR 1e-2 is measurable.
    n_lrg: dict[Literal["train", "val", "test"], int] = {"train": 1200, "val": 100, "test": 320}
    injections_per_lrg: int = Field(4, ge=1)
    # the real catalogue has ~150 LRGs per brick (median of 44 bricks); 40 keeps >= 5 test bricks with
    # >= 20 lenses and 20 non-lenses each, so the per-brick AUROC spread is measurable
    lrgs_per_brick: int = Field(40, ge=1)
    seed: int = 0
    # wider sources, neighbours, stars, LRG profiles, PSF, noise, sky gradients, masked columns (simulate/
    # dataset.py DR_*): a model trained on one simulator's particulars lost 0.07 AUROC on another (DESIGN §8)
    domain_randomization: bool = True


class GatesConfig(_Strict):
    """Shortcut gates: cross-validated logistic regressions on the model's input (DESIGN §1 fact 3)."""

    n_samples: int = Field(2000, ge=20)  # per gate, drawn class-balanced from the train split
    folds: int = Field(5, ge=2)
    max_auc: float = 0.65  # above this a linear model on the feature alone separates the classes
    # max_auc flags a data-level probe (reported evidence, a WARN; DESIGN §8). What blocks is the selection null: the probes on arc-free inputs (positives' own controls vs negatives);
    # at n = 2000 with LRG-grouped folds a null AUC scatters by ~0.02, so 0.55 is ~2.5 sigma
    null_n_samples: int = Field(2000, ge=20)
    max_null_auc: float = Field(0.55, ge=0.5, le=1.0)


class GoNoGoConfig(_Strict):
    """Thresholds of the go/no-go table (DESIGN §5)."""

    min_test_auroc: float = 0.97
    min_precision_at_recall_0_90: float = 0.90
    max_train_val_gap: float = 0.1
    max_quarantine_frac: float = 0.02  # real DR10 pairs: 0.08 % NaN; 25x that means a broken dump
    max_brick_auroc_std: float = 0.05
    # a brick's AUROC counts only with this many test samples of each class: at 5 per class the
    # sampling scatter of one AUROC alone exceeds 0.05, so the std would measure noise
    brick_min_per_class: int = Field(20, ge=2)
    min_bricks: int = Field(5, ge=2)  # a std over fewer qualifying bricks is not reported as a verdict
    max_arc_snr_zero_accuracy_as_lens: float = 0.60  # masked arcs must look like negatives
    max_ece_after_calibration: float = 0.05
    # the plan's "arc-localised focus": occluding the arc outside the core costs at least this much mean score,
    # occluding the core at most this share of it (for theta_E < 0.75" the arc covers the core, so
    # an absolute core limit would fail an honest arc finder on its smallest lenses)
    min_arc_occlusion_drop: float = 0.30
    max_core_to_arc_occlusion_drop: float = 0.5
    # core perturbation (DESIGN §8): PSF-shaped light of the LRGs' own core-brightness spread added to and
    # removed from r < 5 px moves the mean score of each class by at most this, over at least n per class
    max_core_perturbation_change: float = Field(0.05, ge=0, le=1)
    core_perturbation_min_per_class: int = Field(500, ge=1)


class ShiftConfig(_Strict):
    """The shift suite of evaluation_report (halo_core/shift.py): test sets outside the training distribution.
    Fixed seed; never used for training or for choosing parameters."""

    enabled: bool = True
    # 200 lenses and 200 non-lenses per set: >= 100 distinct negatives make TPR at FPR 1e-2 measurable
    n_per_class: int = Field(200, ge=100)
    seed: int = 2026
    min_independent_tpr: float = Field(0.6, ge=0, le=1)  # blocking: TPR at FPR 1e-2 on the independent renderer's set
    max_independent_drop: float = Field(0.2, ge=0, le=1)  # blocking: its drop from the in-distribution TPR
    max_stress_drop: float = Field(0.2, ge=0, le=1)  # WARN per stress set
    max_raw_ece: float = Field(0.05, ge=0, le=1)  # WARN: uncalibrated ECE on any shift set


class HaloConfig(_Strict):
    """Everything one training run needs; field names follow the Gen5-Prime plan where it has one."""

    # model
    model_name: Literal["resnet18"] = "resnet18"
    input_channels: Literal[3, 6] = 3
    # data
    train_path: str = ""  # paired dataset URI with {train,val,test}; empty = synthesize the embedded one
    input_keys: tuple[str, str, str] = ("image_g", "image_r", "image_z")
    exclude_bricks: tuple[str, ...] = ("0460m800", "3252p267")
    quality_cuts: QualityCutsConfig = QualityCutsConfig()
    simulation: SimulationConfig = SimulationConfig()
    # samples and preprocessing (the review's additions)
    sample_construction: Literal["paired_6ch", "ctrl_negative", "unpaired"] = "unpaired"
    normalization: Literal["per_sample_robust", "residual_radial"] = "residual_radial"
    clip_range: tuple[float, float] = (-5.0, 20.0)
    annulus_min_radius_px: float = 20.0  # outer annulus for residual_radial statistics, at 64 px stamps
    augmentation: AugmentationConfig = AugmentationConfig()
    # optimisation
    batch_size: int = Field(256, ge=1)
    epochs: int = Field(50, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    optimizer: Literal["adamw"] = "adamw"
    weight_decay: float = Field(1e-4, ge=0)
    scheduler: SchedulerConfig = SchedulerConfig()
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    loss: Literal["bce_with_logits"] = "bce_with_logits"
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    class_weights: tuple[float, float] | None = None  # (negative, positive)
    metrics: tuple[str, ...] = ("auroc", "auprc", "accuracy", "precision_at_recall_0_95", "recall_at_precision_0_95")
    diagnostic_metrics: tuple[str, ...] = ("arc_snr_zero_accuracy", "per_brick_auroc", "theta_e_binned_auroc")
    # checkpoints and logging
    checkpoint_dir: str = ""  # empty = <root>/trained_model
    save_every_n_epochs: int = Field(5, ge=1)
    save_best: bool = True
    log_to_wandb: bool = False
    wandb_project: str = "dark_halo_scope"
    wandb_run_name: str = ""
    # execution
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # On an H200 one process feeds the trainer 44k samples/s against the bare step's 95k (batch 1024,
    # benchmarks.trainer_overhead); workers restart every epoch, and in 10-step epochs 8 of them were
    # slower (26k). On real-size epochs on a GPU node, try 8.
    num_workers: int = Field(0, ge=0)
    nproc_per_node: int = Field(1, ge=1)  # >1: the trained_model asset runs the trainer under torchrun (DDP)
    channels_last: bool = True  # faster for ResNet18 at 64x64 on CPU here, and the cuDNN fast path
    compile_model: bool = False  # torch.compile the training forward/backward (GPU runs; minutes to compile)
    # evaluation and promotion
    deployment_prevalence: float = Field(1e-3, gt=0, lt=1)
    # fitted on val and used downstream; the report shows the other one beside it. Temperature scaling
    # has one parameter and cannot move the decision threshold: the safer fit on a small val split
    calibration: Literal["platt", "temperature"] = "platt"
    gates: GatesConfig = GatesConfig()
    go_no_go: GoNoGoConfig = GoNoGoConfig()
    shift: ShiftConfig = ShiftConfig()

    @model_validator(mode="after")
    def _channels_match_samples(self) -> "HaloConfig":
        want = 6 if self.sample_construction == "paired_6ch" else 3
        if self.input_channels != want:
            raise ValueError(
                f"input_channels={self.input_channels} but sample_construction={self.sample_construction!r} "
                f"builds {want}-channel samples"
            )
        if self.clip_range[0] >= self.clip_range[1]:
            raise ValueError(f"clip_range {self.clip_range}: low must be below high")
        return self

    @property
    def needs_control_at_inference(self) -> bool:
        """True when the model's input includes the control stamp, which a real galaxy does not have."""
        return self.input_channels == 6

    def config_hash(self) -> str:
        """Everything, for provenance."""
        return _hash(self.model_dump(mode="json"))

    def training_hash(self) -> str:
        """What determines the trained weights: changing a go/no-go threshold, the deployment
        prevalence or the calibration re-evaluates a model, it does not retrain it."""
        return _hash(self.model_dump(mode="json", exclude=EVALUATION_ONLY_KEYS))


EVALUATION_ONLY_KEYS = {"go_no_go", "gates", "deployment_prevalence", "calibration", "shift"}


def _hash(data: dict) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_overrides(assignments: list[str]) -> dict[str, Any]:
    """``["epochs=2", "scheduler.T_0=5"]`` -> ``{"epochs": 2, "scheduler": {"T_0": 5}}`` (values are YAML)."""
    out: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. epochs=2 or scheduler.T_0=5")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return out


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def _preset_dict(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(preset_names())})")
    if name in seen:
        raise ConfigError(f"{path}: preset base cycle {' -> '.join((*seen, name))}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a preset is a mapping of config keys, got {type(data).__name__}")
    base = data.pop("base", None)
    return deep_merge(_preset_dict(base, (*seen, name)), data) if base else data


def load_preset(name: str, overrides: Mapping[str, Any] | None = None) -> HaloConfig:
    """Preset ``name`` with ``overrides`` merged on top; raises ConfigError naming the key at fault."""
    data = deep_merge(_preset_dict(name), overrides or {})
    try:
        return HaloConfig.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<config>'}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"preset {name!r} ({PRESETS_DIR / (name + '.yaml')}): {problems}") from None

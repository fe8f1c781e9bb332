"""Calibration on the validation split (Platt or temperature scaling), equal-mass ECE, and prior
shift to the deployment prevalence (docs/design.md §2 `calibrated_model`, §5 (verdict))."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from halo_core.evaluation.results import CalibrationError, ReliabilityBin


def sigmoid(x: np.ndarray) -> np.ndarray:
    return expit(np.asarray(x, dtype=np.float64))  # no overflow warning for the |logit| > 700 of a 6-channel model


@dataclass(frozen=True)
class Calibration:
    """p = sigmoid(a * logit + b), fitted on val; ``train_prevalence`` is the val positive fraction.
    Platt fits a and b; temperature scaling is the special case a = 1/T, b = 0."""

    a: float
    b: float
    train_prevalence: float
    n_fit: int
    method: str = "platt"

    def probability(self, logits: np.ndarray) -> np.ndarray:
        return sigmoid(self.a * np.asarray(logits, dtype=np.float64) + self.b)

    def at_prevalence(self, logits: np.ndarray, prevalence: float) -> np.ndarray:
        return prior_shift(self.probability(logits), self.train_prevalence, prevalence)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        return cls(d["a"], d["b"], d["train_prevalence"], d["n_fit"], d.get("method", "platt"))


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> Calibration:
    lr = LogisticRegression(C=1e6, max_iter=1000)  # effectively unregularised: two parameters, many samples
    lr.fit(np.asarray(logits, dtype=np.float64).reshape(-1, 1), labels.astype(int))
    return Calibration(float(lr.coef_[0, 0]), float(lr.intercept_[0]), float(labels.mean()), int(len(labels)))


def bce_with_logits(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy of sigmoid(logits), without overflow at large |logit|."""
    z = np.asarray(logits, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - labels * z))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> Calibration:
    """Temperature scaling: the single T > 0 minimising the NLL of sigmoid(logit / T). Unlike Platt
    it cannot shift the decision threshold, only sharpen or soften every score alike."""
    z = np.asarray(logits, dtype=np.float64)
    y = labels.astype(np.float64)
    # search log T: T spans 1e-3..1e3, far beyond any network's over- or under-confidence
    fit = minimize_scalar(lambda log_t: bce_with_logits(z * np.exp(-log_t), y), bounds=(-7.0, 7.0),
                          method="bounded", options={"xatol": 1e-6})
    return Calibration(float(np.exp(-fit.x)), 0.0, float(y.mean()), int(len(y)), "temperature")


def prior_shift(p: np.ndarray, from_prevalence: float, to_prevalence: float) -> np.ndarray:
    """Bayes' rule with new class priors: the posterior a calibrated p becomes at another prevalence."""
    pos = p * (to_prevalence / from_prevalence)
    neg = (1 - p) * ((1 - to_prevalence) / (1 - from_prevalence))
    return pos / (pos + neg)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> CalibrationError:
    """ECE over equal-mass bins (equal-width bins are mostly empty for a confident classifier)."""
    order = np.argsort(probs, kind="stable")
    bins = [b for b in np.array_split(order, n_bins) if len(b)]
    rows = [ReliabilityBin(len(b), float(probs[b].mean()), float(labels[b].mean())) for b in bins]
    ece = sum(r.n * abs(r.mean_p - r.frac_pos) for r in rows) / max(len(probs), 1)
    return CalibrationError(float(ece), int(len(probs)), rows)


FITS = {"platt": fit_platt, "temperature": fit_temperature}


@dataclass(frozen=True)
class ValidationFit:
    """Both scalings fitted on the same val logits: ``chosen`` (config ``calibration``) is used downstream,
    ``alternative`` is reported beside it; ``val_ece`` is the chosen one's val ECE before and after."""

    chosen: Calibration
    alternative: Calibration
    val_ece: dict

    def to_dict(self) -> dict:
        """calibration.json: the chosen scaling's keys at the top (what ``--calibration`` reads)."""
        return {**self.chosen.to_dict(), "alternative": self.alternative.to_dict(), "val_ece": self.val_ece}

    @classmethod
    def from_dict(cls, d: dict) -> ValidationFit:
        return cls(Calibration.from_dict(d), Calibration.from_dict(d["alternative"]), d["val_ece"])


def calibrate_on_val(cfg, dataset_dir: str, model_path: str) -> ValidationFit:
    """``cfg.calibration`` and the other scaling, fitted on the val split's logits (scored once)."""
    from halo_core.data.samples import load_split_samples
    from halo_core.model.checkpoint import load_model, model_precision
    from halo_core.model.inference import predict_logits
    from halo_core.model.network import pick_device

    model, sidecar = load_model(model_path)
    device = pick_device(cfg.device)
    shards, samples = load_split_samples(cfg, dataset_dir, "val")
    logits = predict_logits(model.to(device), shards, samples, cfg.batch_size, device, model_precision(sidecar))
    chosen = FITS[cfg.calibration](logits, samples.labels)
    other = next(name for name in FITS if name != cfg.calibration)
    ece = {"before": expected_calibration_error(sigmoid(logits), samples.labels).ece,
           "after": expected_calibration_error(chosen.probability(logits), samples.labels).ece}
    return ValidationFit(chosen, FITS[other](logits, samples.labels), ece)

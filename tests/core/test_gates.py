import io
import json
import math

import numpy as np
import pyarrow as pa
import pytest

from halo_core.config import load_preset
from halo_core.data.filtering import build_filtered_dataset
from halo_core.data.samples import lrg_half
from halo_core.data.stamps import encode_stamp
from halo_core.evaluation.gates import core_features, radial_features, shortcut_gates
from halo_core.evaluation.results import GatesReport, SelectionNull, Stratum
from tests.factories import make_paired_table, three_splits, write_split_dirs

PREPROCESSINGS = ("per_sample_robust", "residual_radial")


def _gates(tmp_path, normalization: str, **train_kwargs):
    # ctrl_negative: each lens has its own control as the non-lens, so only what the injection adds differs
    cfg = load_preset("smoke", {"sample_construction": "ctrl_negative", "normalization": normalization,
                                "gates": {"n_samples": 200}})
    build_filtered_dataset(cfg, str(three_splits(tmp_path / "raw", n=100, **train_kwargs)), str(tmp_path / "f"))
    return shortcut_gates(cfg, str(tmp_path / "f"))


def test_core_probe_flags_the_label_in_the_core_flux(tmp_path):
    gates = _gates(tmp_path, "per_sample_robust", core_boost=0.05)
    core = gates.probes["core"]
    assert core.auc > 0.9 and not core.passed and core.ci95[0] > 0.85 and core.ci95[0] <= core.auc <= core.ci95[1]
    assert core.n == 200 and core.n_features == 300
    # gates.json, which promotion re-derives the verdict from, reads back as the report it was written from
    back = GatesReport.from_dict(json.loads(json.dumps(gates.to_dict())))
    assert json.dumps(back.to_dict()) == json.dumps(gates.to_dict())
    assert isinstance(back.probes["core"].strata[0], Stratum) and isinstance(back.selection_null, SelectionNull)
    assert math.isclose(gates.probes["metadata"].auc, 0.5, abs_tol=0.1)  # identical metadata in both classes
    # a paired construction: both arc-free sides are the same images, so the null cannot say anything
    assert not gates.selection_null.informative and gates.selection_null.passed and gates.passed


def test_core_probe_passes_when_the_arc_is_outside_the_core(tmp_path):
    gates = _gates(tmp_path, "residual_radial")
    assert gates.probes["core"].auc < 0.6 and gates.probes["core"].passed
    assert gates.probes["core"].strata[0].stratum.startswith("theta_e")


def test_residual_preprocessing_weakens_the_core_flux_shortcut(tmp_path):
    robust = _gates(tmp_path / "robust", "per_sample_robust", core_boost=0.05).probes["core"].auc
    residual = _gates(tmp_path / "residual", "residual_radial", core_boost=0.05).probes["core"].auc
    assert residual < robust - 0.15  # measured: 1.00 -> 0.72 on this steep, bright test galaxy


def test_radial_profile_is_the_ring_median():
    x = np.zeros((1, 1, 64, 64), np.float32)
    x[0, 0, 32, 40:] = 100.0  # a bright line covers a minority of each ring: the median ignores it
    assert np.abs(radial_features(x)).max() == 0
    assert core_features(np.ones((2, 3, 64, 64))).shape == (2, 300)


# Planted data for the blocking data-level gate, under each shipped preprocessing. Unpaired samples:
# stamps of one half of the LRGs are the lenses, controls of the other half the non-lenses.
Y, X = np.mgrid[:64, :64] - 31.5
COMPACT_OFF_CENTRE = np.exp(-0.5 * (np.hypot(X - 3.0, Y) / 1.0) ** 2)  # inside r < 5 px, not round: survives
#                                                                     the radial-profile subtraction
SMALL_ARC = np.exp(-0.5 * ((np.hypot(X, Y) - 3.0) / 1.2) ** 2) * (X > 0)  # theta_E ~0.8": half a ring at 3 px


def _decode(blob: bytes) -> np.ndarray:
    with np.load(io.BytesIO(blob)) as z:
        return np.stack([z[k] for k in ("image_g", "image_r", "image_z")])


def _planted(table: pa.Table, *, lens_lrg_core: float = 0.0, small_arc: float = 0.0) -> pa.Table:
    """Add light to the lens-half LRGs (stamp and control: a selection leak) and/or give every stamp a
    compact small-theta_E arc (the injection itself: signal)."""
    lens_half = lrg_half(table.select(["ra", "dec"]).to_pandas(), seed=0) == 0
    stamps, controls = [], []
    for s_blob, c_blob, leak in zip(table["stamp_npz"].to_pylist(), table["ctrl_stamp_npz"].to_pylist(), lens_half):
        stamp, control = _decode(s_blob), _decode(c_blob)
        lrg_light = (lens_lrg_core * leak * COMPACT_OFF_CENTRE).astype(np.float32)
        stamps.append(encode_stamp(stamp + lrg_light + np.float32(small_arc) * SMALL_ARC.astype(np.float32)))
        controls.append(encode_stamp(control + lrg_light))
    table = table.set_column(table.schema.get_field_index("stamp_npz"), "stamp_npz", pa.array(stamps, pa.binary()))
    return table.set_column(table.schema.get_field_index("ctrl_stamp_npz"), "ctrl_stamp_npz",
                            pa.array(controls, pa.binary()))


def _planted_gates(tmp_path, preset: str, normalization: str | None = None, n_train: int = 400, **plant):
    overrides = {"gates": {"n_samples": 200, "null_n_samples": 400}}
    if normalization:
        overrides["normalization"] = normalization
    cfg = load_preset(preset, overrides)
    tables = {s: _planted(make_paired_table(n, seed=k, bricks=(f"{k}000p010", f"{k}001p010"), id_prefix=s), **plant)
              for k, (s, n) in enumerate({"train": n_train, "val": 12, "test": 12}.items())}
    build_filtered_dataset(cfg, str(write_split_dirs(tmp_path / "raw", tables)), str(tmp_path / "f"))
    return shortcut_gates(cfg, str(tmp_path / "f"))


@pytest.mark.parametrize("normalization", PREPROCESSINGS)
def test_selection_null_fails_when_the_lens_galaxies_carry_core_light(tmp_path, normalization):
    # (a) the label leaks through the core: the lens-half LRGs have compact light at r = 3 px, arcs outside
    gates = _planted_gates(tmp_path, "smoke", normalization, lens_lrg_core=0.02)
    null = gates.selection_null
    assert null.informative and null.probes["core"].auc > 0.8 and not null.passed and not gates.passed
    assert 350 < null.probes["core"].n <= 400  # class-balanced: up to 200 per class


@pytest.mark.parametrize("normalization", PREPROCESSINGS)
def test_selection_null_passes_compact_arcs_that_light_the_core(tmp_path, normalization):
    # (b) compact arcs at small theta_E put > 40 % of their light inside the core, no other difference
    core = np.hypot(X, Y) < 5
    assert (SMALL_ARC * core).sum() / SMALL_ARC.sum() > 0.4
    gates = _planted_gates(tmp_path, "smoke", normalization, small_arc=0.05)
    assert gates.selection_null.informative and gates.selection_null.max_auc <= 0.55 and gates.passed
    assert gates.probes["core"].auc > 0.8  # the data-level probe sees the arc: evidence, not a verdict


def test_gen5_prime_construction_is_no_go(tmp_path):
    # (c) the plan's 6-channel model reads the control: not deployable, whatever the probes say
    gates = _planted_gates(tmp_path, "gen5_prime", n_train=60)
    assert not gates.deployable and not gates.passed and not gates.selection_null.informative


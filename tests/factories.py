"""Small builders of paired tables in the docs/design.md §3 (data contract) schema, for tests that need exact control."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from halo_core.data.stamps import encode_stamp


def _image(rng: np.random.Generator, arc: float, core_boost: float) -> tuple[np.ndarray, np.ndarray]:
    """(stamp, control): a round galaxy in sky noise, the stamp with a ring-segment "arc" at r = 12 px
    (outside the central 10x10) and, optionally, extra flux in the core (a pure core-flux shortcut)."""
    y, x = np.mgrid[:64, :64] - 31.5
    r = np.hypot(x, y)
    galaxy = 0.2 * np.exp(-r / 3.0) * rng.uniform(0.5, 2.0)
    control = np.stack([galaxy * s + rng.normal(0, 0.003, (64, 64)) for s in (0.4, 1.0, 1.6)]).astype(np.float32)
    ring = np.exp(-0.5 * ((r - 12) / 1.2) ** 2) * (x > 4) * (y > -4)  # ~3/8 of a ring
    core = np.exp(-0.5 * (r / 2.1) ** 2)  # PSF-blurred: FWHM 1.3" = 5 px
    return (control + arc * (0.05 * ring + core_boost * core)).astype(np.float32), control


def make_paired_table(n: int, *, seed: int = 0, bricks=("1000p010", "1001p010"), lrgs_per_brick: int = 3,
                      nan_rows=(), corrupt_rows=(), wrong_shape_rows=(), missing_band_rows=(),
                      masked_rows=(), core_boost: float = 0.0, id_prefix: str = "t",
                      split: str | None = None) -> pa.Table:
    rng = np.random.default_rng(seed)
    stamps, controls, rows = [], [], []
    for i in range(n):
        masked = i in masked_rows
        stamp, control = _image(rng, 0.0 if masked else 1.0, core_boost)
        if i in nan_rows:
            stamp[1, 32, 32] = np.nan  # in the core: the filter quarantines it, a scorer refuses it
        s_blob, c_blob = encode_stamp(stamp), encode_stamp(control)
        if i in corrupt_rows:
            s_blob = s_blob[: len(s_blob) // 2]
        if i in wrong_shape_rows:
            s_blob = encode_stamp(np.zeros((3, 32, 32), np.float32))
        if i in missing_band_rows:
            buf = io.BytesIO()
            np.savez_compressed(buf, image_g=stamp[0], image_r=stamp[1])
            s_blob = buf.getvalue()
        brick = bricks[(i // lrgs_per_brick) % len(bricks)]
        lrg = i // 2  # two injections per LRG
        stamps.append(s_blob)
        controls.append(c_blob)
        rows.append({
            "task_id": f"{id_prefix}{i:05d}", "brickname": brick,
            "ra": 100.0 + seed + lrg * 0.01, "dec": 1.0 + lrg * 0.01,
            "theta_e_arcsec": 1.2, "arc_snr": 0.0 if masked else 10.0 + i % 7,
            "is_control": 0, "psfsize_r": 1.3, "bad_pixel_frac": 0.0,
        })
    table = pa.table({
        "stamp_npz": pa.array(stamps, pa.binary()), "ctrl_stamp_npz": pa.array(controls, pa.binary()),
        **{k: [r[k] for r in rows] for k in rows[0]},
    })
    if split is not None:
        table = table.append_column("split", pa.array([split] * n))
    return table


def write_split_dirs(root: Path, tables: dict[str, pa.Table]) -> Path:
    for split, table in tables.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / split / "part-00000.parquet")
    return root


def three_splits(root: Path, n: int = 12, **train_kwargs) -> Path:
    """A valid dataset with disjoint bricks and LRGs per split; kwargs apply to the train split only."""
    return write_split_dirs(root, {
        "train": make_paired_table(n, seed=0, bricks=("1000p010", "1001p010"), id_prefix="a", **train_kwargs),
        "val": make_paired_table(n, seed=1, bricks=("2000p010",), id_prefix="b"),
        "test": make_paired_table(n, seed=2, bricks=("3000p010",), id_prefix="c"),
    })


# go/no-go thresholds a smoke-size model passes: tests of the promotion machinery, never of science
LENIENT_GO_NO_GO = [  # the loosest limits the config's bounds allow
    "go_no_go.min_test_auroc=0.5", "go_no_go.min_precision_at_recall_0_90=0.01", "go_no_go.max_train_val_gap=100",
    "go_no_go.max_ece_after_calibration=0.99", "go_no_go.max_arc_snr_zero_accuracy_as_lens=0.99",
    "go_no_go.max_brick_auroc_std=0.49", "go_no_go.brick_min_per_class=2", "go_no_go.min_bricks=2",
    "go_no_go.min_arc_occlusion_drop=0.0", "go_no_go.max_core_to_arc_occlusion_drop=1",
    "go_no_go.max_core_perturbation_change=0.99", "go_no_go.core_perturbation_min_per_class=1",
    "gates.max_null_auc=0.99",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, for servers a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels, from the PNG's IHDR chunk."""
    assert png.startswith(b"\x89PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")

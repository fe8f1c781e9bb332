"""Checkpoints: a torch file of tensors and plain values plus a JSON sidecar with the provenance.

Loaded with ``weights_only=True`` (no pickled code from a file), written atomically (a crash never
leaves half a checkpoint). The sidecar carries what inference needs to rebuild the model and its
input: architecture, ``input_channels`` and the PreprocessSpec (docs/design.md §1 (domain) fact 6, §9 (run keys)), and the sha256
of the weights beside it (``weights_sha256``): the weights are written first and the sidecar last, so a
sidecar never describes weights that are not there, and loading refuses weights whose bytes differ
from the ones the sidecar describes (a torn write, an edited file, a sidecar copied beside other weights).
"""

from __future__ import annotations

import hashlib
import io
import logging
import subprocess
from pathlib import Path

import torch

from halo_core import __version__, uris
from halo_core.data.preprocess import PreprocessSpec
from halo_core.errors import CheckpointError
from halo_core.model.network import build_model
from halo_core.outputs import write_file

log = logging.getLogger(__name__)


def sidecar_path(path: str) -> str:
    return str(Path(path).with_suffix(".json")) if not uris.is_remote(path) else path.rsplit(".", 1)[0] + ".json"


def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def file_sha256(path: str) -> str:
    """sha256 of a weights file's bytes: names exactly which model was evaluated, promoted, scored."""
    return hashlib.sha256(uris.read_bytes(path)).hexdigest()


WEIGHTS_SHA256 = "weights_sha256"


def save_checkpoint(path: str, state: dict, sidecar: dict) -> None:
    """The weights first, then the sidecar recording their sha256."""
    buf = io.BytesIO()
    torch.save(state, buf)
    save_weights(path, buf.getvalue(), sidecar)


def save_weights(path: str, weights: bytes, sidecar: dict) -> None:
    """A checkpoint's serialized ``weights`` (copied verbatim, e.g. into the registry), then its sidecar."""
    write_file(path, weights)
    write_file(sidecar_path(path), uris.json_text({**sidecar, WEIGHTS_SHA256: hashlib.sha256(weights).hexdigest()}).encode())


def _unusable(path: str, err: Exception) -> CheckpointError:
    if isinstance(err, FileNotFoundError):
        return CheckpointError(f"{path}: not found ({err})")
    # truncated zip, bad JSON, unpickling refused: all mean "unusable"
    return CheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})")


def load_sidecar(path: str) -> dict:
    """The JSON sidecar of checkpoint ``path`` alone: history and provenance without reading the weights."""
    try:
        return uris.read_json(sidecar_path(path))
    except Exception as err:
        raise _unusable(path, err) from err


def verified_weights(path: str, sidecar: dict) -> bytes:
    """The bytes of ``path``, refused (CheckpointError) when they are not the ones its sidecar records;
    a sidecar without a sha256 (older files) loads with a warning."""
    try:
        weights = uris.read_bytes(path)
    except Exception as err:
        raise _unusable(path, err) from err
    recorded = sidecar.get(WEIGHTS_SHA256)
    if recorded is None:
        log.warning("%s: its sidecar records no sha256 (written by an older halo); loading it unverified", path)
    elif hashlib.sha256(weights).hexdigest() != recorded:
        raise CheckpointError(f"{path}: sha256 {hashlib.sha256(weights).hexdigest()[:12]} is not the "
                              f"{recorded[:12]} its sidecar {sidecar_path(path)} records; the weights were altered "
                              "or torn: restore them or retrain")
    return weights


def load_checkpoint(path: str) -> tuple[dict, dict]:
    """(state, sidecar) with the tensors on the CPU (callers move the model to their device);
    CheckpointError when either is missing, truncated, not a checkpoint, or not the weights its
    sidecar records."""
    sidecar = load_sidecar(path)
    weights = verified_weights(path, sidecar)
    try:
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except Exception as err:
        raise _unusable(path, err) from err
    return state, sidecar


def load_model(path: str) -> tuple[torch.nn.Module, dict]:
    """Model in eval mode, rebuilt from the sidecar's architecture, and the sidecar."""
    state, sidecar = load_checkpoint(path)
    model = build_model(sidecar["model_name"], sidecar["input_channels"])
    model.load_state_dict(state["model"])
    return model.eval(), sidecar


def model_precision(sidecar: dict) -> str:
    """The numerics a model was trained, and its threshold measured, in (halo_core.precision); a model
    written before the record existed ran in fp32."""
    return sidecar.get("precision", "fp32")


def model_spec(sidecar: dict) -> PreprocessSpec:
    return PreprocessSpec.from_dict(sidecar["preprocess"])

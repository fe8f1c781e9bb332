"""Model versions and the `production` pointer of one profile (docs/design.md §9 (run keys)), on a local folder or S3.

    <registry>/versions/<UTC time>-<training hash[:8]>/model.pt + model.json (the model card)
    <registry>/production.json      {"version": ..., "previous": ..., "set_at": ...}

Every promotion adds a version; the pointer is one small JSON file replaced atomically (temp file +
rename locally, a single PUT on S3), so a reader sees the old or the new production, never half of
one. Scoring and the model card read through it; `halo models promote` moves it back or forward.
"""

from __future__ import annotations

import datetime as dt

from halo_core import uris
from halo_core.errors import HaloError
from halo_core.model.checkpoint import file_sha256, load_checkpoint, load_sidecar, save_checkpoint

VERSIONS, POINTER, MODEL = "versions", "production.json", "model.pt"


class RegistryError(HaloError):
    """No production model, an unknown version, or a NO-GO version asked to become production."""


def version_name(training_hash: str, now: dt.datetime | None = None) -> str:
    """Sortable and readable: when it was promoted, and which training configuration made it."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{training_hash[:8]}"


def version_model(registry: str, version: str) -> str:
    return uris.join(registry, VERSIONS, version, MODEL)


def versions(registry: str) -> list[dict]:
    """Every version's model card (with its ``version``), oldest first."""
    cards = [load_sidecar(path.removesuffix(".json") + ".pt") for path in uris.find(uris.join(registry, VERSIONS), "/model.json")]
    return sorted(cards, key=lambda c: c["version"])


def find_version(registry: str, model_sha256: str) -> str | None:
    """The version that holds exactly these weights, if one does (a rerun adds no duplicate)."""
    return next((c["version"] for c in versions(registry) if c["model_sha256"] == model_sha256), None)


def add_version(registry: str, model_path: str, card: dict, now: dt.datetime | None = None) -> str:
    """Copy ``model_path`` into a new version with ``card`` beside it; returns the version name."""
    state, sidecar = load_checkpoint(model_path)
    version = base = version_name(sidecar["training_hash"], now)
    for n in range(2, 100):  # two promotions of one configuration within a second
        if not uris.exists(version_model(registry, version)):
            break
        version = f"{base}.{n}"
    save_checkpoint(version_model(registry, version), state,
                    {**sidecar, **card, "version": version, "model_sha256": file_sha256(model_path)})
    return version


def production(registry: str) -> str | None:
    """The production version's name, or None before the first promotion."""
    pointer = uris.join(registry, POINTER)
    return uris.read_json(pointer)["version"] if uris.exists(pointer) else None


def production_model(registry: str) -> str:
    """model.pt of the production version."""
    version = production(registry)
    if version is None:
        raise RegistryError(f"{registry}: no production model yet (nothing was promoted)")
    return version_model(registry, version)


def set_production(registry: str, version: str, reason: str) -> None:
    """Point `production` at ``version``; refuses an unknown version and one whose card is not GO."""
    model = version_model(registry, version)
    if not uris.exists(model):
        known = ", ".join(c["version"] for c in versions(registry)) or "none"
        raise RegistryError(f"{registry}: no version {version!r} (known: {known})")
    verdict = load_sidecar(model).get("go_no_go")
    if not verdict or not verdict["go"]:
        failed = ", ".join(verdict["failed"]) if verdict else "never evaluated"
        raise RegistryError(f"version {version} is NO-GO ({failed}); it cannot become production")
    uris.atomic_write_json(uris.join(registry, POINTER), {
        "version": version, "previous": production(registry), "reason": reason,
        "set_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})


def resolve_model(path: str) -> str:
    """A model.pt as given, or the production model of the registry folder ``path``."""
    return path if path.endswith(".pt") else production_model(path)

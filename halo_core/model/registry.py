"""Model versions and the `production` pointer of one profile (docs/design.md §9 (run keys)), on a local folder or S3.

    <registry>/versions/<UTC time>-<training hash[:8]>/model.pt    the weights, copied verbatim
                                                      /report.json  the evaluation it was promoted on
                                                      /gates.json   the shortcut gates it was promoted on
                                                      /model.json   the model card, written last
    <registry>/production.json      {"version": ..., "previous": ..., "set_at": ...}

A version carries the evidence it was promoted on, so `halo models promote` re-derives GO / NO-GO from
it with the very function `promoted_model` uses (evaluation/promotion.py, which also holds `promote`)
and the thresholds of the version's own config: a hand-edited card cannot talk its way into production.
The pointer is one small JSON file replaced atomically under a lock, compare-and-swap: of two concurrent
promotions one wins and the other fails naming the winner. On S3 there is no lock (one writer per
registry, docs/design.md §11 (storage and outputs)).
The pointer is the one output that lives inside what its writer reads (halo_core.outputs).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from contextlib import nullcontext

from halo_core import uris
from halo_core.errors import HaloError
from halo_core.model.checkpoint import file_sha256, load_sidecar, save_weights, verified_weights
from halo_core.outputs import write_file

VERSIONS, POINTER, MODEL = "versions", "production.json", "model.pt"
REPORT, GATES = "report.json", "gates.json"  # the evidence a version was promoted on
# what version_name makes (a second promotion within a second gets .2, .3, ...): no separator, no dots to climb
VERSION_NAME = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{1,16}(\.\d{1,2})?$")


class RegistryError(HaloError):
    """No production model, an unknown or malformed version, a corrupt pointer, a lost race, or a
    version whose stored evidence is NO-GO."""


def version_name(training_hash: str, now: dt.datetime | None = None) -> str:
    """Sortable and readable: when it was promoted, and which training configuration made it."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{training_hash[:8]}"


def check_version_name(registry: str, version: str) -> str:
    """``version`` if it is a version's name (never a path); RegistryError otherwise."""
    if not isinstance(version, str) or not VERSION_NAME.match(version):
        raise RegistryError(f"{registry}: {version!r} is not a version name (like 20261202T101500Z-1a2b3c4d; "
                            "see `halo models list`)")
    return version


def version_model(registry: str, version: str) -> str:
    return uris.join(registry, VERSIONS, check_version_name(registry, version), MODEL)


def versions(registry: str) -> list[dict]:
    """Every version's model card (with its ``version``), oldest first. A card that cannot be read is
    listed as ``{"version": <folder>, "bad": <why>}`` rather than hiding the others."""
    cards = []
    for path in uris.find(uris.join(registry, VERSIONS), "/model.json"):
        folder = path.rstrip("/").split("/")[-2]
        try:
            card = load_sidecar(path.removesuffix(".json") + ".pt")
            missing = [k for k in ("version", "test_metrics", "training_hash", "data_fingerprint") if k not in card]
            if missing:
                raise HaloError(f"no {', '.join(missing)}")
            if card["version"] != folder:
                raise HaloError(f"its card names version {card['version']!r}")
            cards.append(card)
        except (HaloError, ValueError, TypeError, AttributeError) as err:
            cards.append({"version": folder, "bad": str(err).splitlines()[0]})
    return sorted(cards, key=lambda c: c["version"])


def find_version(registry: str, model_sha256: str) -> str | None:
    """The version that holds exactly these weights, if one does (a rerun adds no duplicate)."""
    return next((c["version"] for c in versions(registry) if c.get("model_sha256") == model_sha256), None)


def add_version(registry: str, model_path: str, card: dict, now: dt.datetime | None = None,
                evidence: dict[str, bytes] | None = None) -> str:
    """Copy ``model_path``'s weights verbatim into a new version with ``evidence`` ({report.json,
    gates.json} bytes) and ``card`` beside them (the card last); returns the version name."""
    sidecar = load_sidecar(model_path)
    weights = verified_weights(model_path, sidecar)
    version = base = version_name(sidecar["training_hash"], now)
    for n in range(2, 100):  # two promotions of one configuration within a second
        if not uris.exists(version_model(registry, version)):
            break
        version = f"{base}.{n}"
    for name, data in (evidence or {}).items():
        write_file(uris.join(registry, VERSIONS, version, name), data)
    save_weights(version_model(registry, version), weights,
                 {**sidecar, **card, "version": version, "model_sha256": file_sha256(model_path)})
    return version


def _pointer_bytes(registry: str) -> bytes | None:
    pointer = uris.join(registry, POINTER)
    return uris.read_bytes(pointer) if uris.exists(pointer) else None


def _pointer_version(registry: str, raw: bytes | None) -> str | None:
    """The version ``raw`` (the pointer's bytes) names; RegistryError naming the file and the repair."""
    if raw is None:
        return None
    pointer = uris.join(registry, POINTER)
    try:
        version = json.loads(raw)["version"]
        check_version_name(registry, version)
    except (ValueError, KeyError, TypeError, RegistryError) as err:
        why = str(err) if isinstance(err, RegistryError) else f"{type(err).__name__}: {err}"
        raise RegistryError(f"{pointer}: corrupt production pointer ({why.splitlines()[0]}); repair it with "
                            f"`halo models promote --registry {registry} VERSION`") from None
    return version


def production(registry: str) -> str | None:
    """The production version's name, or None before the first promotion."""
    return _pointer_version(registry, _pointer_bytes(registry))


def production_model(registry: str) -> str:
    """model.pt of the production version."""
    version = production(registry)
    if version is None:
        raise RegistryError(f"{registry}: no production model yet (nothing was promoted)")
    return version_model(registry, version)


def require_version(registry: str, version: str) -> str:
    model = version_model(registry, version)
    if not uris.exists(model):
        known = ", ".join(c["version"] for c in versions(registry)) or "none"
        raise RegistryError(f"{registry}: no version {version!r} (known: {known})")
    return model


_UNCHECKED, CORRUPT = object(), "<corrupt pointer>"


def pointer_state(registry: str) -> str | None:
    """The production version, None, or CORRUPT: what a compare-and-swap compares."""
    try:
        return production(registry)
    except RegistryError:
        return CORRUPT


def set_production(registry: str, version: str, reason: str, expected: str | None | object = _UNCHECKED) -> str | None:
    """Point `production` at ``version`` (it must exist); returns the version it replaced. For callers
    that derived GO themselves (promoted_model, :func:`promote`). ``expected``: the production version
    the caller decided on (None: none yet; CORRUPT: a pointer to repair); when it has changed since,
    nothing is written and RegistryError names the version that won. Locally under a lock, so the
    read and the swap are one step."""
    require_version(registry, version)
    # waits for a concurrent promotion (milliseconds), then finds the pointer moved and names the winner
    with uris.build_lock(uris.join(registry, POINTER), wait=True) if not uris.is_remote(registry) else nullcontext():
        previous = pointer_state(registry)
        if expected is not _UNCHECKED and previous != expected:
            raise RegistryError(f"{uris.join(registry, POINTER)}: production moved to {previous} while this promotion "
                                f"ran; {version} was not promoted (run it again to promote it over {previous})")
        write_file(uris.join(registry, POINTER), uris.json_text({
            "version": version, "previous": None if previous == CORRUPT else previous, "reason": reason,
            "set_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}).encode())
    return None if previous == CORRUPT else previous



def resolve_model(path: str) -> str:
    """A model.pt as given, or the production model of the registry folder ``path``."""
    return path if path.endswith(".pt") else production_model(path)

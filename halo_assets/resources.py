"""Resources: HaloSettings, the one configuration a run has (preset + overrides + where artifacts go)."""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field

from halo_core import uris
from halo_core.config import HaloConfig, load_config, parse_overrides, profile_name

DEFAULT_ROOT = os.environ.get("HALO_ROOT", "halo_data")
DEFAULT_FILES_URL = os.environ.get("HALO_FILES_URL", "")


class HaloSettings(dg.ConfigurableResource):
    """Which preset (or user's config file) a run uses, its overrides, and the root URI under which
    every artifact lives."""

    preset: str = Field("recommended", description="halo_core preset: recommended, gen5_prime, demo, smoke")
    config_path: str = Field("", description="a YAML config file (the plan's dict as it is, and/or halo's keys); "
                                             "when set it is used instead of the preset")
    overrides: list[str] = Field(
        default_factory=list, description="KEY=VALUE overrides, as `halo --set`, e.g. epochs=5, scheduler.T_0=5")
    root_uri: str = Field(DEFAULT_ROOT, description="local folder or s3://bucket/prefix for all artifacts")
    files_url: str = Field(DEFAULT_FILES_URL, description="http URL at which root_uri is served read-only (`make ui` "
                                                          "serves it on 127.0.0.1), so reports and plots open in the "
                                                          "browser; empty = metadata shows their paths only")

    def config(self) -> HaloConfig:
        return load_config(self.preset, self.config_path or None, parse_overrides(self.overrides))

    @property
    def profile(self) -> str:
        """The preset's name, or the config file's profile (DESIGN §9)."""
        return profile_name(self.config_path) if self.config_path else self.preset

    def config_args(self) -> list[str]:
        """The same configuration as command-line arguments (for the trainer under torchrun)."""
        which = ["--config", self.config_path] if self.config_path else ["--preset", self.preset]
        return [*which, *[arg for item in self.overrides for arg in ("--set", item)]]

    def uri(self, asset: str) -> str:
        """Artifacts of one profile live together; two profiles never overwrite each other."""
        return uris.join(self.root_uri, self.profile, asset)

    def url(self, asset: str, relative: str) -> str | None:
        """The browser URL of an artifact file under ``uri(asset)``, or None when nothing serves the root."""
        return "/".join((self.files_url.rstrip("/"), self.profile, asset, relative)) if self.files_url else None


def halo_settings_for(env: str) -> HaloSettings:
    """HALO_ENV=local (default): artifacts under ./halo_data. HALO_ENV=prod: the `recommended` preset
    with artifacts under $HALO_ROOT (e.g. s3://darkhaloscope/halo), read when the resource is built;
    AWS credentials come from the environment or the instance role, never from config."""
    if env == "prod":
        return HaloSettings(preset="recommended", root_uri=dg.EnvVar("HALO_ROOT"))
    if env == "local":
        return HaloSettings()
    raise ValueError(f"HALO_ENV={env!r}: want local or prod")

"""Resources: HaloSettings, the one configuration a run has (preset + overrides + where artifacts go)."""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field, field_validator

from halo_core import uris
from halo_core.config import HaloConfig, check_preset_name, load_preset, parse_overrides
from halo_core.errors import ConfigError

DEFAULT_ROOT = os.environ.get("HALO_ROOT", "halo_data")


class HaloSettings(dg.ConfigurableResource):
    """Which preset a run uses, its overrides, and the root URI under which every artifact lives."""

    preset: str = Field("recommended", description="halo_core preset: recommended, gen5_prime, demo, smoke")
    overrides: list[str] = Field(
        default_factory=list, description="KEY=VALUE overrides, as `halo --set`, e.g. epochs=5, scheduler.T_0=5")
    root_uri: str = Field(DEFAULT_ROOT, description="local folder or s3://bucket/prefix for all artifacts")

    @field_validator("preset")
    @classmethod
    def _a_package_preset(cls, name: str) -> str:
        try:
            return check_preset_name(name)  # it names the artifacts' folder: never a path
        except ConfigError as err:
            raise ValueError(str(err)) from None

    def config(self) -> HaloConfig:
        return load_preset(self.preset, parse_overrides(self.overrides))

    def uri(self, asset: str) -> str:
        """Artifacts of one preset live together; two presets never overwrite each other."""
        return uris.join(self.root_uri, self.preset, asset)


def halo_settings_for(env: str) -> HaloSettings:
    """HALO_ENV=local (default): artifacts under ./halo_data. HALO_ENV=prod: the `recommended` preset
    with artifacts under $HALO_ROOT (e.g. s3://darkhaloscope/halo), read when the resource is built;
    AWS credentials come from the environment or the instance role, never from config."""
    if env == "prod":
        return HaloSettings(preset="recommended", root_uri=dg.EnvVar("HALO_ROOT"))
    if env == "local":
        return HaloSettings()
    raise ValueError(f"HALO_ENV={env!r}: want local or prod")

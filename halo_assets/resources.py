"""Resources: HaloSettings, the one configuration a run has (profile + overrides + where artifacts go),
and the "profile" partitions that give each profile its own asset history."""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field, PrivateAttr, field_validator

from halo_core import uris
from halo_core.config import HaloConfig, check_preset_name, load_config, parse_overrides, profile_name
from halo_core.errors import ConfigError

DEFAULT_ROOT = os.environ.get("HALO_ROOT", "halo_data")
DEFAULT_FILES_URL = os.environ.get("HALO_FILES_URL", "")

# One partition per profile (docs/design.md §9 (run keys)), so "the latest trained_model" of a profile is that profile's run
# and each profile's checks keep their own history. Dynamic, because a profile is data, not code: a
# user's config file adds one at run time, without a redeploy (the register_profiles sensor adds the
# presets; demo, schedule and new_data_sensor add the profile they run).
PROFILES = dg.DynamicPartitionsDefinition(name="profile")
PARTITION_TAG = "dagster/partition"  # the run tag Dagster sets on a run of one partition


class HaloSettings(dg.ConfigurableResource):
    """Which preset (or user's config file) a run uses, its overrides, and the root URI under which
    every artifact lives."""

    preset: str = Field("recommended", description=(
        "halo_core preset (recommended, gen5_prime, demo, smoke) for runs without a partition: sensors and "
        "schedules retrain this profile; a run of partition P uses profile P instead"))
    config_path: str = Field("", description="a YAML config file (the plan's dict as it is, and/or halo's keys); "
                                             "when set, its profile (the file's stem) is used instead of the preset")
    overrides: list[str] = Field(
        default_factory=list, description="KEY=VALUE overrides, as `halo --set`, e.g. epochs=5, scheduler.T_0=5")
    root_uri: str = Field(DEFAULT_ROOT, description="local folder or s3://bucket/prefix for all artifacts")
    files_url: str = Field(DEFAULT_FILES_URL, description="http URL at which root_uri is served read-only (`make ui` "
                                                          "serves it on 127.0.0.1), so reports and plots open in the "
                                                          "browser; empty = metadata shows their paths only")
    _partition: str | None = PrivateAttr(None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # the run's partition key, read once here so every asset and check of the run resolves the same
        # profile; a key that is no registered profile (a brick of the catalogue) leaves this resource's own
        key = context.run.tags.get(PARTITION_TAG) if context.run else None
        self._partition = key if key and context.instance.has_dynamic_partition(PROFILES.name, key) else None

    @field_validator("preset")
    @classmethod
    def _a_package_preset(cls, name: str) -> str:
        try:
            return check_preset_name(name)  # it names the artifacts' folder: never a path
        except ConfigError as err:
            raise ValueError(str(err)) from None

    def own_profile(self) -> str:
        """This resource's profile: the config file's (docs/design.md §9 (run keys)), else the preset's name."""
        return profile_name(self.config_path) if self.config_path else self.preset

    def profile(self) -> str:
        """The one answer to "which profile": the run's partition key, else this resource's own."""
        return self._partition or self.own_profile()

    def _source(self) -> tuple[str, str | None]:
        """(preset, config file) of the run's profile: a partition that is not this resource's file's
        profile names a package preset."""
        if self.config_path and self.profile() == self.own_profile():
            return self.preset, self.config_path
        return check_preset_name(self.profile()), None

    def config(self) -> HaloConfig:
        preset, path = self._source()
        return load_config(preset, path, parse_overrides(self.overrides))

    def config_args(self) -> list[str]:
        """The same configuration as command-line arguments (for the trainer under torchrun)."""
        preset, path = self._source()
        return [*(["--config", path] if path else ["--preset", preset]),
                *[arg for item in self.overrides for arg in ("--set", item)]]

    def uri(self, asset: str) -> str:
        """Artifacts of one profile live together; two profiles never overwrite each other."""
        return uris.join(self.root_uri, self.profile(), asset)

    def current(self, asset: str) -> str:
        """Where a reader reads ``asset``'s dataset folder: on S3 the version its pointer names, locally the
        folder itself (halo_core.outputs)."""
        return uris.current(self.uri(asset))

    def url(self, asset: str, relative: str) -> str | None:
        """The browser URL of an artifact file under ``uri(asset)``, or None when nothing serves the root."""
        return "/".join((self.files_url.rstrip("/"), self.profile(), asset, relative)) if self.files_url else None


def halo_settings_for(env: str) -> HaloSettings:
    """HALO_ENV=local (default): artifacts under ./halo_data. HALO_ENV=prod: the `recommended` preset
    with artifacts under $HALO_ROOT (e.g. s3://darkhaloscope/halo), read when the resource is built;
    AWS credentials come from the environment or the instance role, never from config."""
    if env == "prod":
        return HaloSettings(preset="recommended", root_uri=dg.EnvVar("HALO_ROOT"))
    if env == "local":
        return HaloSettings()
    raise ValueError(f"HALO_ENV={env!r}: want local or prod")


# This code location's settings: its resource, and the profile whose config versions the assets' code.
DEPLOYMENT = halo_settings_for(os.environ.get("HALO_ENV", "local"))

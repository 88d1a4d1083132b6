"""Dagster resources: thin, configurable handles onto the library's settings and store."""


import dagster as dg
from pydantic import PrivateAttr

from flywheel.protocol import Protocol, load_protocol
from flywheel.settings import Settings, load_settings
from flywheel.store import ContentStore


class FlywheelResource(dg.ConfigurableResource):
    """Settings profile, content store and label protocol of one deployment."""

    # None: $COSMICMAN_PROFILE or demo, read when the settings are first used (not at import)
    profile: str | None = None
    _settings: Settings | None = PrivateAttr(default=None)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.profile)
        return self._settings

    def store(self) -> ContentStore:
        return ContentStore(self.settings.store_url)

    def protocol(self) -> Protocol:
        return load_protocol(self.settings.protocol_path)

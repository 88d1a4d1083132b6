"""Dagster resources: thin, configurable handles onto the library's settings and store."""


import dagster as dg
from dagster_ray import Lifecycle, RayResource
from pydantic import Field, PrivateAttr

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


class RayEngine(RayResource):
    """dagster-ray's Ray resource for the per-image stages.

    It connects only when a step asks (``connect_for``) and the settings choose ``engine.kind:
    ray``: to the cluster at ``engine.ray_address`` (or ``$RAY_ADDRESS``), else to a Ray started
    for the step on loopback, sized for the stage's workers. dagster-ray disconnects it when
    the step ends (and so stops a Ray the step started).
    """

    profile: str | None = None
    lifecycle: Lifecycle = Field(Lifecycle(connect=False), description="connect on demand (connect_for)")

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def name(self) -> str:
        return "cosmicman-ray"

    @property
    def created(self) -> bool:
        return True

    @property
    def ready(self) -> bool:
        return True

    def connect_for(self, context: dg.AssetExecutionContext, settings: Settings, workers: int) -> bool:
        """Connect when the settings choose the Ray engine; True when connected."""
        if settings.engine.kind != "ray":
            return False
        if not self.connected:
            import ray

            from flywheel.ray_data import init_options

            options = init_options(settings.engine, workers)
            self._context = ray.init(**options)
            context.log.info(f"Ray engine: {options.get('address') or 'local Ray on loopback'}, {workers} actors")
        return True

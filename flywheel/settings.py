"""Typed settings, loaded from ``configs/<profile>.yaml`` with environment overrides.

Precedence: environment (``COSMICMAN_<FIELD>``, nested with ``__``, e.g.
``COSMICMAN_WORKSPACE=/data/ws`` or ``COSMICMAN_SYNTHETIC__COUNT=100``) over the profile
file over the defaults below. The profile comes from the argument, else
``COSMICMAN_PROFILE``, else ``demo``. Relative paths are resolved against the project root.
Secrets never live here: fields that name a secret hold the *name* of an environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from typing import Annotated, Union

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from flywheel.annotation.settings import AnnotationSettings
from flywheel.filters.settings import FilterSettings
from flywheel.ray_data import EngineSettings
from flywheel.snapshot.settings import SnapshotSettings
from flywheel.sources.folder import FolderSourceSettings
from flywheel.sources.url_parquet import UrlParquetSourceSettings
from flywheel.sources.web_api import WebApiSourceSettings
from flywheel.synthetic.source import SyntheticConfig
from flywheel.tracking import TrackingSettings
from training.settings import TrainingProfile
from evaluation.settings import EvaluationSettings

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class SettingsError(ValueError):
    """A profile is missing or invalid; the message names the file and the field."""


class SyntheticSourceSettings(SyntheticConfig):
    type: Literal["synthetic"] = "synthetic"
    name: str = "synthetic"
    count: int = Field(2000, ge=0, description="samples rendered per refresh batch")
    total: int | None = Field(None, ge=0, description="samples the source holds in all, like a finite web crawl or "
                              "dataset (None: endless); a refresh past it brings nothing new")


ExternalSource = Annotated[Union[FolderSourceSettings, UrlParquetSourceSettings, WebApiSourceSettings], Field(discriminator="type")]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COSMICMAN_", env_nested_delimiter="__", extra="forbid")

    profile: str = "demo"
    workspace: Path = Path("workspace")
    store_url: str | None = Field(None, description="content store root; default <workspace>/store")
    protocol_path: Path | None = Field(None, description="label protocol YAML; default the bundled protocol")
    synthetic: SyntheticSourceSettings = Field(default_factory=SyntheticSourceSettings)
    sources: list[ExternalSource] = Field(default_factory=list, description="sources besides the synthetic one")
    filter: FilterSettings = Field(default_factory=FilterSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    min_pool_size: int = Field(1000, ge=0, description="the sensor starts a refresh when fewer images are kept")
    refresh_cron: str = Field("0 3 * * 1", description="the source-refresh schedule (UTC); read when the code location loads")
    annotation: AnnotationSettings = Field(default_factory=AnnotationSettings)
    labelling_backend: Literal["oracle", "label_studio"] = Field("oracle", description="who answers label requests")
    label_studio_url: str = "http://127.0.0.1:8080"
    label_studio_token_env: str = Field("LABEL_STUDIO_API_KEY", description="environment variable holding the API token")
    image_server_url: str = Field("http://127.0.0.1:8081", description="where Label Studio's pages fetch images "
                                  "from: `cosmicman serve-images` serves the content store there")
    segformer_dir: Path | None = Field(None, description="local SegFormer checkpoint for parsing; fallback when unset")
    caption_budget: int = Field(77, ge=8, description="tokens (CLIP's context length)")
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    snapshot: SnapshotSettings = Field(default_factory=SnapshotSettings)
    training: TrainingProfile = Field(default_factory=TrainingProfile)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    dvc_executable: str = Field(".tools/dvc/bin/dvc", description="DVC command-line tool (isolated environment)")
    preview_size: int = Field(24, ge=0, description="samples in asset preview grids")

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        # the profile file arrives as init kwargs; the environment overrides it
        return env_settings, init_settings

    def model_post_init(self, _ctx: Any) -> None:
        if not self.workspace.is_absolute():
            self.workspace = (PROJECT_ROOT / self.workspace).resolve()
        if self.store_url is None:
            self.store_url = str(self.workspace / "store")
        if self.tracking.tracking_uri is None:
            self.tracking.tracking_uri = f"sqlite:///{self.workspace / 'mlflow.db'}"
        if self.tracking.artifact_root is None and not self.tracking.is_server():
            self.tracking.artifact_root = (self.workspace / "mlartifacts").as_uri()  # a server chooses its own
        snap = self.snapshot
        snap.registry_path = self._resolve(snap.registry_path or self.workspace / "dvc-registry")
        snap.cache_dir = self._resolve(snap.cache_dir or self.workspace / "snapshots")
        if snap.remote_url is None:
            snap.remote_url = str(self.workspace / "dvc-remote")
        elif "://" not in snap.remote_url:
            snap.remote_url = str(self._resolve(Path(snap.remote_url)))
        if self.training.base_model_dir is not None:
            self.training.base_model_dir = self._resolve(self.training.base_model_dir)
        ev = self.evaluation
        for name in ("judge_dir", "truth_judge_dir", "inception_weights", "clip_dir", "pickscore_dir", "hpsv2_checkpoint"):
            if getattr(ev, name) is not None:
                setattr(ev, name, self._resolve(getattr(ev, name)))
        ev.quality_weights = {k: self._resolve(v) for k, v in ev.quality_weights.items()}
        if self.protocol_path is not None and not self.protocol_path.is_absolute():
            self.protocol_path = (PROJECT_ROOT / self.protocol_path).resolve()

    @staticmethod
    def _resolve(path: Path) -> Path:
        return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()

    # ---- sources -------------------------------------------------------------------------
    def all_sources(self) -> list:
        """Every enabled source: the synthetic one (when it renders anything) and the configured ones."""
        out = [self.synthetic] if self.synthetic.count > 0 else []
        out += self.sources
        names = [s.name for s in out]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise SettingsError(f"profile {self.profile!r}: duplicate source name(s) {sorted(dup)}")
        return out

    def source(self, name: str):
        for s in self.all_sources():
            if s.name == name:
                return s
        raise SettingsError(f"profile {self.profile!r}: no source named {name!r} (known: {[s.name for s in self.all_sources()]})")

    @property
    def state_dir(self) -> Path:
        return self.workspace / "state"

    # ---- derived paths ---------------------------------------------------------------
    @property
    def manifests_dir(self) -> Path:
        return self.workspace / "manifests"

    @property
    def data_docs_dir(self) -> Path:
        """Great Expectations' file context: every validation result and the HTML data docs."""
        return self.workspace / "data_docs"

    def dvc_command(self) -> str:
        exe = Path(self.dvc_executable)
        if not exe.is_absolute() and (PROJECT_ROOT / exe).exists():
            return str(PROJECT_ROOT / exe)
        return self.dvc_executable


def config_dir() -> Path:
    return Path(os.environ.get("COSMICMAN_CONFIG_DIR", PROJECT_ROOT / "configs"))


def load_settings(profile: str | None = None, **overrides: Any) -> Settings:
    profile = profile or os.environ.get("COSMICMAN_PROFILE") or "demo"
    path = config_dir() / f"{profile}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in config_dir().glob("*.yaml"))
        raise SettingsError(f"{path}: no such profile {profile!r} (known: {', '.join(known) or 'none'})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a mapping at the top level")
    data.setdefault("profile", profile)
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise SettingsError(f"{path}: invalid settings: {problems}") from None

"""Settings of the API and of every `emsops` subcommand that shares its data folder."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Read from `EMSOPS_*` environment variables; tests build their own instances."""

    model_config = SettingsConfigDict(env_prefix="EMSOPS_", extra="ignore")

    data_dir: Path = Field(default=REPO_ROOT / "var", description="SQLite DB, job runs, reports")
    database_url: str | None = Field(
        default=None, description="postgresql://... switches the store from SQLite to PostgreSQL"
    )
    project_dir: Path = Field(
        default=REPO_ROOT, description="Where playbooks/ and ansible.cfg live (runner cwd)"
    )
    workers: int = Field(default=2, ge=1, le=64, description="Concurrent playbook runs")
    job_timeout_s: int = Field(default=3600, ge=1)
    price_list: Path = Field(default=REPO_ROOT / "api" / "prices.example.yml")
    # Customer id -> inventory path (relative paths are taken from project_dir). Upserted into
    # the store at start so a site can be configured without admin calls.
    sites: dict[str, Path] = Field(default_factory=dict)
    inventory_root: Path = Field(
        default=REPO_ROOT / "inventories",
        description="Site inventories must resolve inside this folder (relative: project_dir)",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Larger request bodies are refused (413)"
    )
    onsite_max_days: int = Field(
        default=366, ge=1, description="Longest on-site ticket window a quote is made for"
    )
    vault_password_file: Path | None = Field(
        default=None, description="Copied 0600 into each run's private folder, removed after"
    )
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_attempts: int = Field(default=5, ge=1, le=20)
    webhook_backoff_s: float = Field(default=2.0, ge=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    development: bool = Field(default=False, description="Allows placeholder secrets")

    def check_secrets(self) -> None:
        """Refuse placeholder secrets unless running in development mode."""
        if self.development or self.webhook_secret is None:
            return
        if (
            self.webhook_secret.lower() in {"changeme", "change-me", "secret", "example"}
            or len(self.webhook_secret) < 16
        ):
            raise ValueError("EMSOPS_WEBHOOK_SECRET is a placeholder or shorter than 16 characters")

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "emsops.sqlite3"

    def resolve(self, path: Path) -> Path:
        """A configured path, relative ones taken from the project folder."""
        return path if path.is_absolute() else (self.project_dir / path)


@lru_cache
def get_settings() -> Settings:
    return Settings()

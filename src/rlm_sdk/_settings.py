"""Configuration from the environment and a ``.env`` file.

Precedence everywhere in the SDK: an explicit argument, then the environment (or ``.env`` in
the working directory; a real environment variable wins over the file), then the default in
:mod:`rlm_sdk._constants`. Settings are read when an object is built, never at import time.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "load_settings"]


class Settings(BaseSettings):
    """Everything the SDK reads from the environment; see docs/reference/configuration.md."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    openai_api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, validation_alias="OPENAI_BASE_URL")
    anthropic_api_key: SecretStr | None = Field(default=None, validation_alias="ANTHROPIC_API_KEY")
    anthropic_base_url: str | None = Field(default=None, validation_alias="ANTHROPIC_BASE_URL")
    ollama_base_url: str | None = Field(default=None, validation_alias="OLLAMA_BASE_URL")
    model: str | None = Field(default=None, validation_alias=AliasChoices("RLM_MODEL"))
    sub_model: str | None = Field(default=None, validation_alias=AliasChoices("RLM_SUB_MODEL"))


def load_settings() -> Settings:
    """Read the settings now (environment, then ``.env``)."""
    return Settings()

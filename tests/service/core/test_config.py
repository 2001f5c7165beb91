"""Settings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.core.config import Settings


def test_environment_with_the_xray_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XRAY_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("XRAY_PROVIDERS", "cuda, cpu")
    monkeypatch.setenv("XRAY_API_KEY", "s3cret")
    monkeypatch.setenv("XRAY_MAX_UPLOAD_BYTES", "1000")
    monkeypatch.setenv("XRAY_CORS_ORIGINS", "https://pacs.example,https://viewer.example")
    settings = Settings()
    assert settings.models_dir == tmp_path
    assert settings.providers == ["cuda", "cpu"]
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.max_upload_bytes == 1000
    assert settings.cors_origins == ["https://pacs.example", "https://viewer.example"]


def test_defaults_are_safe() -> None:
    settings = Settings()
    assert settings.api_key is None
    assert settings.cors_origins == []
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.providers == ["cpu"]


def test_unknown_provider_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XRAY_PROVIDERS", "gpu")
    with pytest.raises(ValidationError, match="unknown provider"):
        Settings()

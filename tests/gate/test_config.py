"""Loading the config: where it comes from, defaults, and one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import CONFIG_ENV, ConfigError, Settings, load_settings, parse_settings


def test_defaults_without_any_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    settings = load_settings()
    assert settings == Settings()
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8086)
    assert settings.auth is None and settings.storage.backend == "local"
    assert settings.limits.max_entry_bytes == 512 << 20
    assert (settings.compression.min_bytes, settings.compression.level) == (512, 1)


def test_file_named_by_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  port: 9000\nauth: {}\n")
    monkeypatch.setenv(CONFIG_ENV, str(path))
    settings = load_settings()
    assert settings.server.port == 9000 and settings.auth is not None
    assert load_settings(tmp_path / "c.yaml") == settings


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_settings(path) == Settings()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"server": {"port": 70000}}, "config: server.port: Input should be less than or equal to 65535"),
        ({"auth": {"issuers": [{"issuer": "https://i", "audiences": []}]}}, "config: auth.issuers[0].audiences:"),
        ({"auth": {"rules": [{"role": "reader", "subject": "x"}]}}, "config: auth: rules need at least one"),
        ({"auth": {"issuers": [{"issuer": "i", "audiences": ["a"], "extra": 1}]}}, "auth.issuers[0].extra: unknown"),
        ({"compression": {"level": 22}}, "config: compression.level:"),
        ({"storage": {"backnd": 1, "bogus": 2}}, "(and 1 more)"),
    ],
)
def test_errors_name_the_key(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(data)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_rules_and_issuers_parse() -> None:
    settings = parse_settings(
        {
            "auth": {
                "issuers": [{"issuer": "https://prow/issuer", "audiences": ["gocachegate"], "jwks_file": "/k.json"}],
                "rules": [
                    {"subject": "system:serviceaccount:test-pods:*", "role": "reader"},
                    {"claims": {"email": "admin@p.iam.gserviceaccount.com"}, "role": "admin", "namespaces": ["*"]},
                ],
            }
        }
    )
    assert settings.auth is not None
    assert settings.auth.rules[0].namespaces == ["*"]
    assert settings.auth.issuers[0].jwks_file == Path("/k.json")

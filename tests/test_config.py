"""Settings: every error names the key; secrets come from the environment or files and never
reach a log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.config import load_config
from bot.errors import ConfigError
from bot.logs import RedactSecrets

GOOD = """
accounts:
  - id: "17841400000000001"
    platform: instagram
listen: {port: 9000}
"""
ENV = {
    "BOT_APP_SECRET": "s3cret-app",
    "BOT_VERIFY_TOKEN": "verify-me",
    "BOT_TOKEN_17841400000000001": "EAAG-token-123",
}


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bot.yaml"
    p.write_text(text)
    return p


def test_secrets_come_from_the_environment_not_the_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), env=ENV)
    assert config.app_secret == "s3cret-app"
    assert config.accounts[0].token == "EAAG-token-123"
    assert "EAAG" not in repr(config) and "s3cret" not in repr(config)


def test_secrets_can_come_from_files_outside_git(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-a-file\n")
    text = GOOD.replace("platform: instagram", "platform: instagram\n    token_file: token")
    env = {k: v for k, v in ENV.items() if not k.startswith("BOT_TOKEN")}
    assert load_config(write(tmp_path, text), env=env).accounts[0].token == "from-a-file"


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        (GOOD, {}, "'app_secret' is missing: set the environment variable BOT_APP_SECRET"),
        (GOOD.replace("accounts:", "acounts:"), ENV, "unknown setting 'acounts': did you mean"),
        (GOOD.replace("instagram", "tiktok"), ENV, "'accounts[0].platform' must be instagram"),
        (GOOD.replace("port: 9000", "port: high"), ENV, "'listen.port' must be a whole number"),
        ("accounts: []", ENV, "'accounts' must be a non-empty list"),
        ("accounts: [\n  - id: 1\n  bad", ENV, "bot.yaml:2:3: not valid YAML"),
        (
            GOOD + "database: {synchronous: SOMETIMES}",
            ENV,
            "'database.synchronous' must be NORMAL or FULL",
        ),
        (
            GOOD + "shutdown_drain_seconds: -1",
            ENV,
            "'shutdown_drain_seconds' must be a whole number from 0 to 3600",
        ),
        (
            GOOD + "database: {inbox_keep_days: forever}",
            ENV,
            "'database.inbox_keep_days' must be a whole number from 0 to 36500",
        ),
    ],
)
def test_a_wrong_setting_stops_start_up_naming_the_key(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), env=env)
    assert message in str(err.value)


def test_a_missing_settings_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", env=ENV)


def test_logs_mask_every_secret_even_inside_exceptions(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.secrets")
    handler = caplog.handler
    handler.addFilter(RedactSecrets(["EAAG-token-123", "s3cret-app"]))
    try:
        log.warning("calling with %s", "EAAG-token-123")
        try:
            raise RuntimeError("bad token EAAG-token-123 for s3cret-app")
        except RuntimeError:
            log.exception("failed")
    finally:
        handler.filters.clear()
    assert "EAAG-token-123" not in caplog.text and "s3cret-app" not in caplog.text
    assert caplog.text.count("***") >= 3

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


NO_SECRETS = {k: v for k, v in ENV.items() if k != "BOT_APP_SECRET"}


@pytest.mark.parametrize(
    ("extra", "env", "files", "message"),
    [
        (
            "",
            {"BOT_APP_SECRET": ""},
            {},
            "the environment variable BOT_APP_SECRET is set but blank",
        ),
        ("", {"BOT_APP_SECRET": " \t"}, {}, "the environment variable BOT_APP_SECRET is set but"),
        ("app_secret_file: secret\n", {}, {"secret": "\n"}, "the file {tmp}/secret"),
        ("app_secret_file: secret\n", {}, {"secret": ""}, "('app_secret_file') holds only"),
        ("app_secret_file: secret\n", {}, {"secret": " \r\n\t"}, "holds only whitespace"),
        ("app_secret_file: ''\n", {}, {}, "'app_secret_file' is empty: give the path"),
        ("app_secret: ''\n", {}, {}, "'app_secret' is empty in the settings file"),
        ("app_secret: '  '\n", {}, {}, "'app_secret' is empty in the settings file"),
        ("app_secret:\n", {}, {}, "'app_secret' is empty in the settings file"),
        # An empty variable is reported even where a file would give a secret: it is the one
        # the operator meant, and the file may hold an old one.
        ("app_secret_file: secret\n", {"BOT_APP_SECRET": ""}, {"secret": "s"}, "BOT_APP_SECRET"),
    ],
)
def test_an_empty_or_blank_app_secret_refuses_to_start_naming_where_it_came_from(
    tmp_path: Path, extra: str, env: dict[str, str], files: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, GOOD + extra), env={**NO_SECRETS, **env})
    assert message.format(tmp=tmp_path) in str(err.value)
    assert "'app_secret' is empty" in str(err.value) or "'app_secret_file'" in str(err.value)
    assert len(str(err.value).splitlines()) == 1


@pytest.mark.parametrize(
    ("extra", "env", "message"),
    [
        ("", {"BOT_VERIFY_TOKEN": "\n"}, "'verify_token' is empty: the environment variable"),
        ("", {"BOT_TOKEN_17841400000000001": " "}, "'accounts[0].token' is empty: the environ"),
        (
            "    token_file: token\n",
            {"BOT_TOKEN_17841400000000001": None},
            "'accounts[0].token' is empty: the file",
        ),
    ],
)
def test_an_empty_verify_token_or_account_token_refuses_to_start(
    tmp_path: Path, extra: str, env: dict[str, str | None], message: str
) -> None:
    (tmp_path / "token").write_text("\n")
    merged = {**ENV, **env}
    text = GOOD.replace("platform: instagram\n", "platform: instagram\n" + extra)
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), env={k: v for k, v in merged.items() if v is not None})
    assert message in str(err.value)


def test_every_secret_problem_is_reported_at_once_each_on_its_line(tmp_path: Path) -> None:
    """Three missing secrets used to take three starts to find."""
    text = (
        "accounts:\n"
        "  - {id: '17841400000000001', platform: instagram}\n"
        "  - {id: '100000000000001', platform: messenger}\n"
        "verify_token_file: nope\n"
        "colour: blue\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), env={"BOT_APP_SECRET": " "})
    lines = str(err.value).splitlines()
    assert [line.split(": ", 2)[1] for line in lines] == [
        "unknown setting 'colour'",
        "'app_secret' is empty",
        "'verify_token_file'",
        "'accounts[0].token' is missing",
        "'accounts[1].token' is missing",
    ]
    assert all(line.startswith(f"{tmp_path / 'bot.yaml'}: ") for line in lines)


def test_secret_values_never_appear_in_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, GOOD), env={**ENV, "BOT_VERIFY_TOKEN": " "})
    assert "s3cret-app" not in str(err.value) and "EAAG-token-123" not in str(err.value)

"""Settings: one YAML file plus the environment; every error names the key to fix.

Secrets (the app secret, the verify token, access tokens) are never required in the file: each
can come from an environment variable or a `*_file` setting that points outside git.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from bot.boundedyaml import SETTINGS_LIMITS, YamlLimitError, load, read_text
from bot.errors import ConfigError
from bot.events import Platform

__all__ = [
    "Account",
    "Config",
    "Database",
    "ListenLimits",
    "load_config",
    "config_from_mapping",
    "reload_secrets",
    "SECRET_ENV",
]

SECRET_ENV = {
    "app_secret": "BOT_APP_SECRET",
    "verify_token": "BOT_VERIFY_TOKEN",
}
T = TypeVar("T")
GRAPH_HOSTS = {
    "instagram": "https://graph.instagram.com",
    "facebook": "https://graph.facebook.com",
}


@dataclass(frozen=True, slots=True)
class Account:
    """One Instagram professional account or Facebook Page the bot serves."""

    id: str
    platform: Platform
    token: str = field(repr=False)
    name: str = ""
    # Instagram Login sends to graph.instagram.com; Messenger and Instagram via Facebook Login
    # send to graph.facebook.com with a Page token (POLICY.md §3).
    login: str = "instagram"
    graph_base_url: str = "https://graph.instagram.com"
    api_version: str = "v21.0"

    def messages_url(self) -> str:
        return f"{self.graph_base_url.rstrip('/')}/{self.api_version}/{self.id}/messages"


@dataclass(frozen=True, slots=True)
class Database:
    path: Path = Path("data/bot.sqlite3")
    # NORMAL survives a killed process (WAL); FULL also survives power loss, at a cost
    # measured in docs/benchmarks.md.
    synchronous: str = "NORMAL"
    # Processed deliveries older than this leave the inbox file (0: kept for ever).
    inbox_keep_days: int = 30


@dataclass(frozen=True, slots=True)
class ListenLimits:
    """How long a connection may take and how many may be open (bot/server.py)."""

    # Never more than the open-file limit leaves room for (bot/server.py says what it keeps).
    max_connections: int = 1000
    # Meta sends a request's head and body at once: a few seconds is long for either.
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    # Above nginx's 60 s upstream keep-alive, so a proxy closes its idle connections first
    # and never posts on one the bot is closing (aiohttp's own web.run_app default is 75).
    idle_timeout: float = 75.0


@dataclass(frozen=True, slots=True)
class Config:
    app_secret: str = field(repr=False)
    verify_token: str = field(repr=False)
    accounts: tuple[Account, ...]
    host: str = "127.0.0.1"
    port: int = 8080
    listen_limits: ListenLimits = ListenLimits()
    webhook_path: str = "/webhook"
    max_body_bytes: int = 4 * 1024 * 1024
    database: Database = Database()
    policy_profile: Path | None = None
    flows_dir: Path = Path("flows")
    templates_dir: Path = Path("templates")
    log_format: str = "text"  # text | json
    log_level: str = "INFO"
    # On SIGTERM, how long to go on processing what the inbox holds before exiting: the rest
    # waits there for the next start. Docker kills 10 s after SIGTERM, systemd after 90 s.
    shutdown_drain_seconds: int = 5
    # The settings file it was read from, so `reload_secrets` can read the secrets again.
    path: Path | None = None

    def account(self, account_id: str) -> Account | None:
        for a in self.accounts:
            if a.id == account_id:
                return a
        return None


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    try:
        data = load(read_text(path, SETTINGS_LIMITS), SETTINGS_LIMITS) or {}
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: the settings file does not exist (use --config PATH)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the settings file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the settings file is not UTF-8 text") from None
    except YamlLimitError as exc:
        raise ConfigError(f"{path}:{exc.line}:{exc.column}: {exc.message}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {exc}") from None
    return replace(
        config_from_mapping(data, env=env, source=str(path), base=path.parent), path=path
    )


def reload_secrets(config: Config, env: Mapping[str, str] | None = None) -> Config:
    """The same settings with every secret read again: a token file an operator replaced
    after Meta refused the old token (code 190), for `bot resume` and SIGHUP to pick up.

    Only secrets change: the rest needs a restart. A variable of the environment can't change
    under a running process, so a token given there stays what it was; raises ConfigError if
    the file or a secret can't be read now (the caller keeps the old ones).
    """
    if config.path is None:
        return config
    fresh = load_config(config.path, env)
    tokens = {a.id: a.token for a in fresh.accounts}
    return replace(
        config,
        app_secret=fresh.app_secret,
        verify_token=fresh.verify_token,
        accounts=tuple(replace(a, token=tokens.get(a.id, a.token)) for a in config.accounts),
    )


_TOP_KEYS = {
    "app_secret",
    "app_secret_file",
    "verify_token",
    "verify_token_file",
    "accounts",
    "listen",
    "webhook_path",
    "max_body_bytes",
    "database",
    "policy_profile",
    "flows_dir",
    "templates_dir",
    "log",
    "shutdown_drain_seconds",
}
_LISTEN_KEYS = {
    "host",
    "port",
    "max_connections",
    "header_timeout_seconds",
    "body_timeout_seconds",
    "idle_timeout_seconds",
}
_ACCOUNT_KEYS = {
    "id",
    "platform",
    "name",
    "login",
    "token",
    "token_file",
    "token_env",
    "graph_base_url",
    "api_version",
}


def config_from_mapping(
    data: Any, *, env: Mapping[str, str], source: str = "<settings>", base: Path | None = None
) -> Config:
    """The checked settings, or one ConfigError naming every problem found, a line each.

    The secrets, the accounts and unknown keys are all checked before anything is refused
    (three missing secrets took three starts to find); of the other settings, the first
    wrong one is reported with them.
    """
    problems: list[str] = []
    try:
        config = _config(data, env, source, base or Path("."), problems)
    except ConfigError as exc:
        problems.append(str(exc))
        config = None
    if problems or config is None:
        raise ConfigError("\n".join(problems))
    return config


def _config(
    data: Any, env: Mapping[str, str], source: str, base: Path, problems: list[str]
) -> Config | None:
    """The settings; problems that don't stop the others being read go to `problems`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the settings must be a mapping of keys")
    _collect(problems, _no_unknown, data, _TOP_KEYS, source, "")

    def secret(key: str) -> str:
        value = _secret(data, key, SECRET_ENV[key], env, source, base)
        if value is None:
            raise ConfigError(
                f"{source}: '{key}' is missing: set the environment variable {SECRET_ENV[key]}"
                f" or '{key}_file' (a file outside git)"
            )
        return value

    app_secret = _collect(problems, secret, "app_secret")
    verify_token = _collect(problems, secret, "verify_token")
    raw_accounts = data.get("accounts")
    if not isinstance(raw_accounts, list) or not raw_accounts:
        raise ConfigError(f"{source}: 'accounts' must be a non-empty list of accounts")
    found = [
        _collect(problems, _account, a, i, env, source, base) for i, a in enumerate(raw_accounts)
    ]
    accounts = tuple(a for a in found if a is not None)
    seen: set[str] = set()
    for a in accounts:
        if a.id in seen:
            raise ConfigError(f"{source}: accounts: the id {a.id!r} is listed twice")
        seen.add(a.id)

    listen = data.get("listen", {}) or {}
    if not isinstance(listen, dict):
        raise ConfigError(f"{source}: 'listen' must be a mapping with host and port")
    _no_unknown(listen, _LISTEN_KEYS, source, "listen.")
    db = data.get("database", {}) or {}
    if not isinstance(db, dict):
        raise ConfigError(f"{source}: 'database' must be a mapping with path and synchronous")
    _no_unknown(db, {"path", "synchronous", "inbox_keep_days"}, source, "database.")
    sync = str(db.get("synchronous", "NORMAL")).upper()
    if sync not in {"NORMAL", "FULL"}:
        raise ConfigError(f"{source}: 'database.synchronous' must be NORMAL or FULL, not {sync!r}")
    log = data.get("log", {}) or {}
    if not isinstance(log, dict):
        raise ConfigError(f"{source}: 'log' must be a mapping with format and level")
    _no_unknown(log, {"format", "level"}, source, "log.")
    log_format = str(log.get("format", "text"))
    if log_format not in {"text", "json"}:
        raise ConfigError(f"{source}: 'log.format' must be text or json, not {log_format!r}")
    webhook_path = str(data.get("webhook_path", "/webhook"))
    if not webhook_path.startswith("/"):
        raise ConfigError(f"{source}: 'webhook_path' must start with '/'")
    profile = data.get("policy_profile")
    if app_secret is None or verify_token is None or len(accounts) < len(found):
        return None  # what is missing is in `problems`

    return Config(
        app_secret=app_secret,
        verify_token=verify_token,
        accounts=accounts,
        host=str(listen.get("host", "127.0.0.1")),
        port=_int(listen.get("port", 8080), "listen.port", source, 0, 65535),
        listen_limits=_listen_limits(listen, source),
        webhook_path=webhook_path,
        max_body_bytes=_int(
            data.get("max_body_bytes", 4 * 1024 * 1024), "max_body_bytes", source, 1024, 1 << 30
        ),
        database=Database(
            path=_path(db.get("path", "data/bot.sqlite3"), base),
            synchronous=sync,
            inbox_keep_days=_int(
                db.get("inbox_keep_days", 30), "database.inbox_keep_days", source, 0, 36500
            ),
        ),
        policy_profile=_path(profile, base) if profile else None,
        flows_dir=_path(data.get("flows_dir", "flows"), base),
        templates_dir=_path(data.get("templates_dir", "templates"), base),
        log_format=log_format,
        log_level=str(log.get("level", "INFO")).upper(),
        shutdown_drain_seconds=_int(
            data.get("shutdown_drain_seconds", 5), "shutdown_drain_seconds", source, 0, 3600
        ),
    )


def _listen_limits(listen: Mapping[str, Any], source: str) -> ListenLimits:
    d = ListenLimits()

    def seconds(key: str, default: float, hi: float) -> float:
        return _seconds(listen.get(key, default), f"listen.{key}", source, 0.1, hi)

    return ListenLimits(
        max_connections=_int(
            listen.get("max_connections", d.max_connections),
            "listen.max_connections",
            source,
            1,
            1_000_000,
        ),
        header_timeout=seconds("header_timeout_seconds", d.header_timeout, 3600),
        body_timeout=seconds("body_timeout_seconds", d.body_timeout, 3600),
        idle_timeout=seconds("idle_timeout_seconds", d.idle_timeout, 86400),
    )


def _account(raw: Any, i: int, env: Mapping[str, str], source: str, base: Path) -> Account:
    where = f"accounts[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: '{where}' must be a mapping with id, platform and token")
    _no_unknown(raw, _ACCOUNT_KEYS, source, f"{where}.")
    if "id" not in raw:
        raise ConfigError(f"{source}: '{where}.id' is missing (the IG account id or Page id)")
    account_id = str(raw["id"])
    try:
        platform = Platform(str(raw.get("platform", "")).lower())
    except ValueError:
        raise ConfigError(
            f"{source}: '{where}.platform' must be instagram or messenger, "
            f"not {raw.get('platform')!r}"
        ) from None
    login = str(raw.get("login", "instagram" if platform is Platform.INSTAGRAM else "facebook"))
    if login not in GRAPH_HOSTS:
        raise ConfigError(f"{source}: '{where}.login' must be instagram or facebook")
    if platform is Platform.MESSENGER and login != "facebook":
        raise ConfigError(f"{source}: '{where}.login': Messenger accounts use facebook login")
    token_env = str(raw.get("token_env", f"BOT_TOKEN_{account_id}"))
    token = _secret(raw, "token", token_env, env, source, base, prefix=f"{where}.")
    if token is None:
        raise ConfigError(
            f"{source}: '{where}.token' is missing: set the environment variable {token_env}"
            f" or '{where}.token_file'"
        )
    return Account(
        id=account_id,
        platform=platform,
        token=token,
        name=str(raw.get("name", "")),
        login=login,
        graph_base_url=str(raw.get("graph_base_url", GRAPH_HOSTS[login])),
        api_version=str(raw.get("api_version", "v21.0")),
    )


def _secret(
    raw: Mapping[str, Any],
    key: str,
    env_name: str,
    env: Mapping[str, str],
    source: str,
    base: Path,
    prefix: str = "",
) -> str | None:
    """Environment first, then `<key>_file`, then the value in the file itself; None if none
    is given. One given but blank is refused, naming where it came from (never the value):
    an empty app secret is a key anyone can sign a forged delivery with, and an environment
    variable set to nothing is a mistake to report, not a reason to look elsewhere."""
    name = f"'{prefix}{key}'"
    if env_name in env:
        return _not_blank(
            env[env_name],
            f"{source}: {name} is empty: the environment variable {env_name} is set but blank;"
            " set it to the secret",
        )
    file_key = f"{key}_file"
    if file_key in raw:
        if raw[file_key] is None or not str(raw[file_key]).strip():
            raise ConfigError(
                f"{source}: '{prefix}{file_key}' is empty: give the path of the file that"
                " holds the secret"
            )
        p = _path(raw[file_key], base)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            raise ConfigError(f"{source}: '{prefix}{file_key}': cannot read {p}: {why}") from None
        return _not_blank(
            text,
            f"{source}: {name} is empty: the file {p} ('{prefix}{file_key}') holds only"
            " whitespace; write the secret into it",
        )
    if key not in raw:
        return None
    return _not_blank(
        "" if raw[key] is None else str(raw[key]),
        f"{source}: {name} is empty in the settings file; set the environment variable"
        f" {env_name} or '{prefix}{file_key}' instead",
    )


def _not_blank(value: str, problem: str) -> str:
    if not value.strip():
        raise ConfigError(problem)
    return value.strip()


def _collect(problems: list[str], check: Callable[..., T], *args: Any) -> T | None:
    """`check(*args)`, or None with its ConfigError's lines added to `problems`."""
    try:
        return check(*args)
    except ConfigError as exc:
        problems.extend(str(exc).splitlines())
        return None


def _no_unknown(raw: Mapping[str, Any], known: set[str], source: str, prefix: str) -> None:
    import difflib

    lines = []
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f": did you mean '{prefix}{close[0]}'?" if close else ""
            lines.append(f"{source}: unknown setting '{prefix}{key}'{hint}")
    if lines:
        raise ConfigError("\n".join(lines))


def _int(value: Any, key: str, source: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{source}: '{key}' must be a whole number from {lo} to {hi}")
    return value


def _seconds(value: Any, key: str, source: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ConfigError(f"{source}: '{key}' must be a number of seconds from {lo:g} to {hi:g}")
    return float(value)


def _path(value: Any, base: Path) -> Path:
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else base / p

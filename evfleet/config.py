"""One settings mechanism for every `evfleet` command: flags > environment > TOML file > defaults.

Each command declares a `CommandSettings` subclass (pydantic-settings) and builds it once with
`load(cls, config_file, **flags)`:

- flags: the values given on the command line (None = not given; `given_flags` picks them from
  a Typer context, so options may keep visible defaults);
- environment: `ENV_PREFIX` + the upper-case field name, where `ENV_PREFIX` is the command's own
  (`EVFLEET_SIM_`, ...), except the fields in `SHARED_ENV` (`redis_url`, `log_json`, ...), which
  every command reads from `EVFLEET_<NAME>`;
- the `[TABLE]` table of the `--config` TOML file (pydantic-settings' `TomlConfigSettingsSource`),
  or, without that table, its top-level keys (other commands' tables left out), so one file can
  configure every command;
- the defaults of the class.

Depends on nothing of csms, evse_sim or optimizer.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

COMMAND_TABLES = frozenset({"csms", "optimizer", "sim", "optimize", "demo"})
"""TOML tables of the commands; a command without its own table ignores the others'."""

S = TypeVar("S", bound="CommandSettings")

_config_file: ContextVar[Path | None] = ContextVar("evfleet_config_file", default=None)


class ConfigFileError(ValueError):
    """The TOML configuration file is missing or invalid."""


class _TableToml(TomlConfigSettingsSource):
    """A TOML file's `[table]`, or its top-level keys outside any command table."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None, table: str) -> None:
        self._table = table
        super().__init__(settings_cls, toml_file=path)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        """The table of this command (pydantic-settings calls this once per file)."""
        try:
            data = tomllib.loads(Path(file_path).read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigFileError(f"config file {file_path} is not valid TOML: {err}") from err
        except OSError as err:
            raise ConfigFileError(f"cannot read config file {file_path}: {err.strerror or err}") from err
        if self._table in data:
            table = data[self._table]
            if not isinstance(table, dict):
                raise ConfigFileError(f"config file {file_path}: [{self._table}] must be a table")
            return table
        return {k: v for k, v in data.items() if k not in COMMAND_TABLES}


class _Only(PydanticBaseSettingsSource):
    """Another source restricted to some fields (the shared `EVFLEET_<NAME>` variables)."""

    def __init__(self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource,
                 names: frozenset[str]) -> None:
        super().__init__(settings_cls)
        self._inner, self._names = inner, names

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        """Unused: `__call__` delegates to the inner source."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        """The inner source's values of the allowed fields."""
        return {k: v for k, v in self._inner().items() if k in self._names}


class CommandSettings(BaseSettings):
    """Base of every command's settings (frozen; unknown keys refused)."""

    model_config = SettingsConfigDict(env_prefix="EVFLEET_", frozen=True, extra="forbid")

    TABLE: ClassVar[str] = ""
    """The command's table in the TOML file."""
    SHARED_ENV: ClassVar[frozenset[str]] = frozenset()
    """Fields read from `EVFLEET_<NAME>` although the class has its own `env_prefix`."""
    FLAGS: ClassVar[Mapping[str, str]] = {}
    """Command-line flag of a field when it is not `--field-name` (for error messages)."""

    @field_validator("log_level", mode="before", check_fields=False)
    @classmethod
    def _log_level_upper(cls, value: object) -> object:
        """`--log-level debug` is `DEBUG` (every command's `log_level`)."""
        return value.upper() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init) > own environment > shared `EVFLEET_` environment > TOML file."""
        shared: tuple[PydanticBaseSettingsSource, ...] = ()
        if cls.SHARED_ENV:
            everything = EnvSettingsSource(settings_cls, env_prefix="EVFLEET_")
            shared = (_Only(settings_cls, everything, cls.SHARED_ENV),)
        return (init_settings, env_settings, *shared,
                _TableToml(settings_cls, _config_file.get(), cls.TABLE))

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable of `field`."""
        prefix = "EVFLEET_" if field in cls.SHARED_ENV else str(cls.model_config.get("env_prefix", ""))
        return f"{prefix}{field}".upper()

    @classmethod
    def flag_name(cls, field: str) -> str:
        """The command-line flag of `field`."""
        return cls.FLAGS.get(field, "--" + field.replace("_", "-"))


def redis_url_scheme(value: str | None) -> str | None:
    """Refuse a Redis URL redis-py cannot open, at start and in one line (not deep in a connect)."""
    if value is not None and not value.startswith(("redis://", "rediss://", "unix://", "redis+cluster://",
                                                   "rediss+cluster://")):
        raise ValueError("must start with redis://, rediss://, unix:// or (Redis Cluster) redis+cluster://")
    return value


def load(cls: type[S], config_file: Path | None = None, **flags: Any) -> S:
    """`cls` with precedence flags > environment > TOML file > defaults.

    `flags` whose value is None are ignored (an unset CLI option). Raises `ConfigFileError`
    (missing or invalid file) or pydantic's `ValidationError` (see `describe_error`).
    """
    if config_file is not None and not Path(config_file).is_file():
        raise ConfigFileError(f"config file not found: {config_file}")
    token = _config_file.set(Path(config_file) if config_file is not None else None)
    try:
        return cls(**{k: v for k, v in flags.items() if v is not None})
    finally:
        _config_file.reset(token)


def describe_error(cls: type[CommandSettings], err: ValidationError) -> str:
    """One line naming each bad setting as flag / environment variable / file key."""
    problems = []
    for e in err.errors():
        field = str(e["loc"][0]) if e["loc"] else ""
        rest = ".".join(str(p) for p in e["loc"][1:])
        msg = e["msg"].removeprefix("Value error, ")
        if field in cls.model_fields:
            where = f"{field} ({cls.flag_name(field)}, {cls.env_name(field)})"
        else:
            where = field or "(settings)"
        problems.append(f"{where}{'.' + rest if rest else ''}: {msg}")
    return "invalid configuration: " + "; ".join(problems)


def given_flags(ctx: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    """The options of `values` that the command line (or a prompt) set, not their defaults."""
    out = {}
    for name, value in values.items():
        source = ctx.get_parameter_source(name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            out[name] = value
    return out


def load_or_exit(cls: type[S], config_file: Path | None = None, **flags: Any) -> S:
    """`load` for a CLI command: a bad file or value prints one `error:` line and exits 2."""
    import typer

    try:
        return load(cls, config_file, **flags)
    except ConfigFileError as err:
        message = str(err)
    except ValidationError as err:
        message = describe_error(cls, err)
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def option(cls: type[CommandSettings], field: str, *decls: str, **kwargs: Any) -> Any:
    """A Typer option whose default and help come from `cls`'s field (one source of truth)."""
    import typer
    from pydantic_core import PydanticUndefined

    info = cls.model_fields[field]
    default = None if info.default is PydanticUndefined else info.default
    env = cls.env_name(field)
    text = kwargs.pop("help", None) or info.description or field
    names = decls or (cls.flag_name(field),)
    return typer.Option(default, *names, help=f"{text} [env var: {env}]", **kwargs)

"""Settings every service shares, read from environment variables with one prefix per service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigurationError(Exception):
    """The service cannot start with a setting as it is (a port another process holds, a
    database it cannot reach, a file it cannot create). The message names the environment
    variable to change; the command line prints it as one line, with no traceback."""


def env_name(settings_class: type[Any], field: str) -> str:
    """The environment variable a settings field is read from."""
    info = settings_class.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    prefix = str(settings_class.model_config.get("env_prefix", ""))
    return (prefix + field).upper()


def path_error(
    settings_class: type[Any], field: str, path: Path, what: str, exc: BaseException
) -> ConfigurationError:
    """`VARIABLE='path': cannot open or create <what> (Permission denied: /var/lib)`."""
    if isinstance(exc, FileExistsError) and exc.filename:
        problem = f"{exc.filename} is not a directory"
    elif isinstance(exc, OSError) and exc.strerror:
        problem = exc.strerror + (f": {exc.filename}" if exc.filename else "")
    else:
        problem = str(exc)
    return ConfigurationError(
        f"{env_name(settings_class, field)}={str(path)!r}: cannot open or create {what} ({problem})"
    )


def secret_value(value: SecretStr | None, file: Path | None) -> str | None:
    """A secret given directly or as a file (a mounted Kubernetes Secret); None when neither."""
    if value is not None:
        return value.get_secret_value()
    if file is not None:
        return file.read_text().strip()
    return None


class Grant(BaseModel):
    """What one token subject may do: `{"tenant": "acme", "scopes": ["state.read"]}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = Field(min_length=1, max_length=128)
    scopes: list[str]


class ServiceSettings(BaseSettings):
    """Base settings; a service subclasses it and sets `env_prefix` (for example `STATE_`).

    Every field is documented in its service's page under docs/ (a test checks it).
    """

    model_config = SettingsConfigDict(env_prefix="SVC_", extra="ignore", frozen=True)

    # Listening: loopback by default so a local run is never exposed; the chart sets 0.0.0.0.
    host: str = "127.0.0.1"
    port: int = Field(default=50051, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    # 0 picks a free port; -1 disables the metrics endpoint.
    metrics_port: int = Field(default=9090, ge=-1, le=65535)

    # Shutdown: NOT_SERVING first, keep serving for `shutdown_delay_s` so load balancers
    # notice, then finish in-flight calls within `grace_period_s`.
    grace_period_s: float = Field(default=20.0, ge=0)
    shutdown_delay_s: float = Field(default=0.0, ge=0)

    # Transport limits.
    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # In-flight calls per replica, unary and streaming apart, so that streams never take
    # what unary calls need; health and reflection are never counted (a probe that cannot
    # get through would restart a healthy pod). Beyond: RESOURCE_EXHAUSTED at once.
    max_concurrent_rpcs: int | None = Field(default=None, ge=1)
    max_concurrent_streams: int | None = Field(default=100, ge=1)
    keepalive_time_s: float = Field(default=30.0, gt=0)
    keepalive_timeout_s: float = Field(default=10.0, gt=0)
    # Servers close connections after this age so clients rebalance onto new replicas.
    max_connection_age_s: float = Field(default=300.0, gt=0)
    max_connection_age_grace_s: float = Field(default=30.0, ge=0)

    # Logs.
    log_level: str = "INFO"

    # Tracing: OTLP/gRPC export when an endpoint is set, no export otherwise.
    otlp_endpoint: str | None = None
    trace_sample_ratio: float = Field(default=1.0, ge=0, le=1)

    # Authentication: JWT bearer tokens verified with a static key (HS* shared secret, or
    # the PEM public key for RS*/ES*/EdDSA; the key may come from a file, a mounted Secret),
    # and/or the public keys of a JSON Web Key Set in a file (re-read when it changes: key
    # rotation) or at a URL (the cluster's /openid/v1/jwks for service-account tokens).
    auth_jwt_key: SecretStr | None = None
    auth_jwt_key_file: Path | None = None
    auth_jwt_algorithms: list[str] = Field(default_factory=lambda: ["HS256"])
    auth_jwks_file: Path | None = None
    auth_jwks_url: str | None = None
    # For an https auth_jwks_url: the CA to trust and a bearer token to send (in a pod: the
    # service account's ca.crt and token).
    auth_jwks_ca_file: Path | None = None
    auth_jwks_token_file: Path | None = None
    auth_jwks_refresh_s: float = Field(default=300.0, ge=5)
    # Subject -> tenant and scopes, for tokens that carry no tenant claim (Kubernetes
    # service-account tokens: subject "system:serviceaccount:<namespace>:<name>").
    auth_grants: dict[str, Grant] = Field(default_factory=dict)
    auth_jwt_issuer: str | None = None
    auth_jwt_audience: str | None = None
    auth_require_exp: bool = True
    # A token may not live longer than this from now (exp claim): a leaked token of the
    # far future would otherwise be good for ever.
    auth_max_token_lifetime_s: float = Field(default=24 * 3600.0, gt=0)
    # Only for local experiments; the service logs a warning at start.
    auth_disabled: bool = False

    @model_validator(mode="after")
    def _key_source_is_unambiguous(self) -> ServiceSettings:
        if self.auth_jwt_key is not None and self.auth_jwt_key_file is not None:
            key, key_file = (env_name(type(self), f) for f in ("auth_jwt_key", "auth_jwt_key_file"))
            raise ValueError(f"set only one of {key} and {key_file}")
        return self

    def jwt_key(self) -> str | None:
        """The verification key from the setting or its file, or None when none is set."""
        try:
            return secret_value(self.auth_jwt_key, self.auth_jwt_key_file)
        except OSError as exc:
            variable = env_name(type(self), "auth_jwt_key_file")
            raise ConfigurationError(
                f"{variable}={str(self.auth_jwt_key_file)!r}: cannot read the key ({exc.strerror})"
            ) from exc

    def listeners(self) -> list[tuple[str, str]]:
        """(host field, port field) of every socket the service listens on: checked before
        it starts, so that a port another process holds is said before anything opens."""
        return [("host", "port"), ("metrics_host", "metrics_port")]

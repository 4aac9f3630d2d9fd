"""The command line every service shares: its configuration comes from environment
variables; `--help` lists them and starts nothing; a bad value is one line that names the
variable, the value and what is expected, with no traceback."""

from __future__ import annotations

import sys
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticUndefined

from voiceagent_backbone.servicekit.config import ConfigurationError, ServiceSettings, env_name
from voiceagent_backbone.servicekit.server import ServiceFactory, main

__all__ = ["configuration_error", "env_name", "run", "settings_help", "usage"]


def run(
    settings_class: type[ServiceSettings], factory: ServiceFactory, name: str, summary: str
) -> None:
    """`python -m voiceagent_backbone.<name>`: --help, or the service until SIGTERM."""
    args = sys.argv[1:]
    if any(a in ("-h", "--help") for a in args):
        print(usage(settings_class, name, summary))
        return
    if args:
        sys.exit(
            f"{name}: unexpected argument {args[0]!r}: every setting comes from an environment "
            "variable (see --help)"
        )
    try:
        settings = settings_class()
    except ValidationError as exc:
        sys.exit(configuration_error(name, settings_class, exc))
    try:
        main(settings, factory, name)
    except ConfigurationError as exc:
        # A port taken, a database unreachable, a file that cannot be created: found while
        # starting, and said the way a bad value is.
        sys.exit(f"{name}: {exc}")


def _secret(settings_class: type[Any], field: str) -> bool:
    info = settings_class.model_fields.get(field)
    return info is not None and "SecretStr" in str(info.annotation)


def configuration_error(name: str, settings_class: type[Any], exc: ValidationError) -> str:
    """One line per bad setting: `<service>: VARIABLE='value': what is expected`."""
    lines = []
    for error in exc.errors():
        loc = error.get("loc") or ()
        field = str(loc[0]) if loc else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        if not field:  # a check across settings: its message names the variables
            lines.append(f"{name}: {message}")
            continue
        variable = env_name(settings_class, field)
        value = error.get("input")
        shown = "" if _secret(settings_class, field) or isinstance(value, dict) else f"={value!r}"
        lines.append(f"{name}: {variable}{shown}: {message}")
    return "\n".join(lines)


def settings_help(settings_class: type[Any]) -> str:
    """Every setting's environment variable, with its default."""
    rows = ["Every setting comes from an environment variable:"]
    for field, info in settings_class.model_fields.items():
        default = info.default
        if info.default_factory is not None or default is PydanticUndefined:
            shown = ""
        elif default is None or default == "" or _secret(settings_class, field):
            shown = " (unset)"
        else:
            shown = f" (default {default})"
        rows.append(f"  {env_name(settings_class, field)}{shown}")
    return "\n".join(rows)


def usage(settings_class: type[Any], name: str, summary: str) -> str:
    return "\n\n".join(
        [
            f"usage: python -m voiceagent_backbone.{name} [--help]",
            summary,
            settings_help(settings_class),
        ]
    )

"""Every setting of every service is documented: each environment variable a settings class
reads is named in a table row of its service's page under docs/, and the README and docs name
no variable (and no `make` target) that does not exist."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from google.protobuf.descriptor import FileDescriptor
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from tests.support.processes import ROOT
from voiceagent_backbone.agent_svc.config import AgentSettings
from voiceagent_backbone.api.context.v1 import context_pb2
from voiceagent_backbone.api.recovery.v1 import recovery_pb2
from voiceagent_backbone.api.state.v1 import state_pb2
from voiceagent_backbone.context_svc.config import ContextSettings
from voiceagent_backbone.recovery_svc.config import RecoverySettings
from voiceagent_backbone.servicekit.config import ServiceSettings, env_name
from voiceagent_backbone.state_svc.config import StateSettings

# The page that documents each settings class, the shared ServiceSettings fields included
# (under the class's own prefix, with its own defaults).
PAGES: dict[type[BaseSettings], str] = {
    StateSettings: "docs/state_svc.md",
    ContextSettings: "docs/context_svc.md",
    RecoverySettings: "docs/recovery.md",
    AgentSettings: "docs/agent.md",
}
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Names the docs may use that are not settings fields: variables read elsewhere, each
# documented where it is read.
NOT_SETTINGS = {
    "AGENT_CHAT_LOG_LEVEL",  # the terminal chat's log level (agent_svc/terminal.py)
}
# What a variable of ours looks like: a prefix of a settings class (or of the variables
# LiveKit and OpenAI keep), then upper-case words; `STATE_*` and `*_AUTH_DISABLED` are
# patterns that stand for several.
_PREFIXES = "STATE|CONTEXT|RECOVERY|AGENT|LIVEKIT|OPENAI"
_VARIABLE = re.compile(rf"(?<![A-Za-z0-9_*])((?:{_PREFIXES})_[A-Z0-9_]*)(\*?)")
_ANY_PREFIX = re.compile(r"(?<![A-Za-z0-9_])\*(_[A-Z0-9_]*[A-Z0-9])(_\*)?")
_MAKE_TARGET = re.compile(r"(?:`|^|\$ )make ([a-z][a-z0-9-]*)", re.MULTILINE)


def variables(settings_class: type[BaseSettings]) -> list[str]:
    """Every environment variable the class reads: `env_name`'s (the prefix and the field
    name, upper-cased, or the field's alias), and every other alias it accepts."""
    names = []
    for field, info in settings_class.model_fields.items():
        names.append(env_name(settings_class, field))
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names += [choice for choice in alias.choices if isinstance(choice, str)]
    return list(dict.fromkeys(names))


def table_names(page: Path) -> set[str]:
    """The variables named (in backticks) in the rows of the page's tables."""
    names: set[str] = set()
    for line in page.read_text().splitlines():
        if line.lstrip().startswith("|"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", line))
    return names


def known_variables() -> set[str]:
    return {name for settings_class in PAGES for name in variables(settings_class)}


def enum_values() -> set[str]:
    """Names of the contracts' enum values (`RECOVERY_PHASE_CLAIMED`): not variables."""
    names: set[str] = set()
    for module in (state_pb2, context_pb2, recovery_pb2):
        descriptor: FileDescriptor = module.DESCRIPTOR
        enums = list(descriptor.enum_types_by_name.values())
        for message in descriptor.message_types_by_name.values():
            enums += list(message.enum_types)
        for enum in enums:
            names.update(enum.values_by_name)
    return names


def test_every_settings_class_has_its_page() -> None:
    found: set[type[BaseSettings]] = set()
    for config in sorted((ROOT / "voiceagent_backbone").glob("*/config.py")):
        module = importlib.import_module(f"voiceagent_backbone.{config.parent.name}.config")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseSettings)
                and value.__module__ == module.__name__
                and value is not ServiceSettings  # documented under each service's prefix
            ):
                found.add(value)
    assert found == set(PAGES), "a settings class without a docs page: add it to PAGES"
    for page in PAGES.values():
        assert (ROOT / page).is_file(), page


@pytest.mark.parametrize(
    "settings_class", list(PAGES), ids=[settings_class.__name__ for settings_class in PAGES]
)
def test_every_variable_is_in_a_table_of_its_page(settings_class: type[BaseSettings]) -> None:
    page = ROOT / PAGES[settings_class]
    documented = table_names(page)
    missing = [name for name in variables(settings_class) if name not in documented]
    assert not missing, f"{page.relative_to(ROOT)} has no table row naming {missing}"


def test_the_docs_name_no_variable_that_does_not_exist() -> None:
    known = known_variables()
    assert not NOT_SETTINGS & known, "a setting now: take it off NOT_SETTINGS"
    allowed = known | NOT_SETTINGS | enum_values()
    unknown: list[str] = []
    for doc in DOCS:
        text = doc.read_text()
        where = doc.relative_to(ROOT)
        for match in _VARIABLE.finditer(text):
            name, star = match.groups()
            if name.endswith("_") or star:  # a pattern: `STATE_*`, `CONTEXT_OPENAI_*`
                if not any(k.startswith(name) for k in allowed):
                    unknown.append(f"{where}: {name}{star}")
            elif name not in allowed:
                unknown.append(f"{where}: {name}")
        for part, open_end in _ANY_PREFIX.findall(text):  # `*_AUTH_DISABLED`, `*_AUTH_*`
            if not any(k.endswith(part) or (open_end and part + "_" in k) for k in known):
                unknown.append(f"{where}: *{part}{open_end}")
    assert not unknown, f"variables no settings class reads: {sorted(set(unknown))}"


def test_the_docs_name_only_make_targets_that_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, re.MULTILINE))
    unknown = [
        f"{doc.relative_to(ROOT)}: make {target}"
        for doc in DOCS
        for target in _MAKE_TARGET.findall(doc.read_text())
        if target not in targets
    ]
    assert not unknown, unknown

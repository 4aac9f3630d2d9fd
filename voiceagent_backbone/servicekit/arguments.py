"""The project's small command-line tools (token, keygen) answer a mistake the way the
services do: one line that says what is wrong, and a non-zero exit."""

from __future__ import annotations

import argparse
from typing import NoReturn


class ToolParser(argparse.ArgumentParser):
    """argparse, with `<name>: <what is wrong> (see --help)` instead of the usage block."""

    def __init__(self, name: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.name = name

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.name}: {message} (see --help)\n")

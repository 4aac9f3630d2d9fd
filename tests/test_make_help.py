"""`make help` (and a bare `make`) lists every target with what it does."""

from __future__ import annotations

import re
import subprocess

from tests.support.processes import ROOT


def test_make_help_lists_every_target_with_what_it_does() -> None:
    makefile = (ROOT / "Makefile").read_text()
    phony = re.search(r"^\.PHONY: (.*)$", makefile, re.MULTILINE)
    assert phony is not None
    targets = set(phony.group(1).split()) - {"pytest"}  # `make test` runs it
    for command in (["make", "help"], ["make"]):
        listed = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
        ).stdout
        shown = dict(re.findall(r"^  make (\S+)\s+(.+)$", listed, re.MULTILINE))
        assert set(shown) == targets, command
        assert all(description.strip() for description in shown.values())

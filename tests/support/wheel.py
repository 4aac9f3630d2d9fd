"""The distribution as a user gets it: built with `uv build` (sdist, then the wheel from the
sdist), installed into a fresh virtual environment outside the checkout with only the
extras asked for, at the versions uv.lock pins (its export is the constraints file)."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import ROOT, run_command

UV = ROOT / ".tools" / "uv" / "bin" / "uv"
DISTRIBUTION = "voiceagent_backbone"


@dataclass(frozen=True)
class InstalledWheel:
    wheel: Path
    python: Path  # the fresh venv's interpreter

    @property
    def site_packages(self) -> Path:
        return next((self.python.parent.parent / "lib").glob("python3.*/site-packages"))

    def top_level_names(self) -> set[str]:
        """The import names the wheel installs (its first path parts, without metadata)."""
        with zipfile.ZipFile(self.wheel) as archive:
            names = {n.split("/", 1)[0] for n in archive.namelist()}
        return {n.removesuffix(".py") for n in names if not n.endswith((".dist-info", ".data"))}


def _uv_env() -> dict[str, str]:
    # Never download a Python build; never let the checkout's venv leak in.
    return {"UV_PYTHON_DOWNLOADS": "never", "VIRTUAL_ENV": "", "PYTHONPATH": ""}


def build_wheel(out_dir: Path) -> Path:
    run_command([UV, "build", "--quiet", "--out-dir", out_dir, ROOT], env=_uv_env(), timeout_s=300)
    wheels = sorted(out_dir.glob(f"{DISTRIBUTION}-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def install_in_fresh_venv(wheel: Path, extra: str, venv: Path) -> InstalledWheel:
    """`wheel[extra]` in a new venv; dependencies constrained to uv.lock's versions."""
    constraints = venv.parent / f"constraints-{extra}.txt"
    constraints.write_text(
        run_command(
            [
                UV,
                "export",
                "--project",
                ROOT,
                "--frozen",
                "--no-hashes",
                "--no-header",
                "--no-emit-project",
                "--extra",
                extra,
            ],
            env=_uv_env(),
        )
    )
    run_command(
        [UV, "venv", "--quiet", "--python", "python3.11", venv], env=_uv_env(), timeout_s=120
    )
    python = venv / "bin" / "python"
    run_command(
        [
            UV,
            "pip",
            "install",
            "--quiet",
            "--python",
            python,
            "-c",
            constraints,
            f"{wheel}[{extra}]",
        ],
        env=_uv_env(),
        timeout_s=900,
    )
    return InstalledWheel(wheel, python)


def clean_env(installed: InstalledWheel) -> dict[str, str]:
    """Environment for a process of the fresh venv: its PATH first, nothing of the checkout."""
    return {
        "PATH": f"{installed.python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(installed.python.parent.parent),
        "PYTHONPATH": "",
    }

"""The images the cluster runs, as deploy/e2e/build-images.sh built them: unprivileged,
small, the agent without PyTorch, and no trace of the build's extra CA certificates."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.cluster.conftest import SUMMARY, ClusterRun
from tests.support.compose import docker, docker_host

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

PROJECT_IMAGES = [f"voiceagent-{name}:e2e" for name in ("state", "context", "agent")]
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")


def test_images_are_unprivileged_and_their_sizes_reported(cluster_run: ClusterRun) -> None:
    sizes = {}
    for image in [*PROJECT_IMAGES, "voiceagent-mongo-standin:e2e", "voiceagent-livekit:e2e"]:
        [inspected] = json.loads(docker("image", "inspect", image))
        sizes[image.split(":")[0].removeprefix("voiceagent-")] = round(inspected["Size"] / 1e6)
        if image in PROJECT_IMAGES:
            assert inspected["Config"]["User"] == "10001:10001", image
    SUMMARY["image_mb"] = sizes
    # The agent has livekit-agents, onnxruntime (Silero VAD) and av, and no PyTorch.
    found = docker(
        "run", "--rm", "--network=none", "--read-only", "--entrypoint=python",
        "voiceagent-agent:e2e", "-c",
        "import importlib.util as u; "
        "print([m for m in ('torch', 'sentence_transformers') if u.find_spec(m)])",
    )  # fmt: skip
    assert found.strip() == "[]"


# The sha256 of every .py file of the installed package, by path: what a Python runs.
SOURCES_DIGEST = """
import hashlib, importlib.util, pathlib
root = pathlib.Path(importlib.util.find_spec("voiceagent_backbone").origin).parent
files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
for p in files:
    print(p.relative_to(root), hashlib.sha256(p.read_bytes()).hexdigest())
"""


def test_images_run_this_checkouts_code(cluster_run: ClusterRun) -> None:
    """A warm build cache must not install an earlier build's wheel (uv rebuilds a local
    project only when its cache keys change: pyproject.toml's tool.uv.cache-keys)."""
    # This checkout's package: the test venv installs it editable.
    here = subprocess.run(
        [sys.executable, "-c", SOURCES_DIGEST], capture_output=True, text=True, check=True
    ).stdout
    for image in PROJECT_IMAGES:
        inside = docker(
            "run", "--rm", "--network=none", "--read-only", "--entrypoint=python", image,
            "-c", SOURCES_DIGEST,
        )  # fmt: skip
        assert inside == here, f"{image} was built from other sources than this checkout"


def test_no_layer_holds_the_builds_extra_ca_certificates(cluster_run: ClusterRun) -> None:
    """The certificates reach the build as a secret (deploy/docker/with-extra-ca.sh)."""
    certificates = sorted(EXTRA_CA_DIR.glob("*.crt"))
    if not certificates:
        pytest.skip(
            f"this machine trusts no extra CA ({EXTRA_CA_DIR} is empty): nothing to look for"
        )
    # A line from the middle of each certificate's base64 body.
    needles = []
    for certificate in certificates:
        body = [line for line in certificate.read_text().splitlines() if "-----" not in line]
        needles.append(body[len(body) // 2].encode())
    for image in PROJECT_IMAGES:
        saved = subprocess.run(
            ["/usr/bin/docker", "save", image],
            env={**os.environ, "DOCKER_HOST": docker_host()},
            capture_output=True,
            check=True,
            timeout=300,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(saved)) as outer:
            for member in outer.getmembers():
                if not member.name.endswith("layer.tar"):
                    continue
                layer = outer.extractfile(member)
                assert layer is not None
                with tarfile.open(fileobj=layer) as files:
                    for entry in files:
                        if not entry.isfile():
                            continue
                        data = files.extractfile(entry)
                        content = data.read() if data else b""
                        for needle in needles:
                            assert needle not in content, f"{image}: {entry.name} holds an extra CA"

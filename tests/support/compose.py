"""compose.yaml on the harness's own dockerd (deploy/local-cluster/docker.sh), driven with
Debian's docker-compose 1.29: start the daemon, build the images, run one project, and take
every trace of it away again."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import RUN_DIR
from tests.support.processes import IN_CI, ROOT, free_port, run_command, tool_path

SCRIPTS = ROOT / "deploy" / "local-cluster"
COMPOSE_FILE = ROOT / "compose.yaml"
# The stand-in images instead of Docker Hub's mongo and livekit-server (and no .env).
STANDINS_ENV = ROOT / "deploy" / "compose" / "standins.env"
# Debian's packages: the docker CLI with BuildKit (not a newer one on the PATH), compose 1.29.
DOCKERD = Path("/usr/sbin/dockerd")
DOCKER = Path("/usr/bin/docker")
DOCKER_COMPOSE = Path("/usr/bin/docker-compose")
SYS_NET = Path("/sys/class/net")
# The services compose.yaml builds (volume-owners shares state's image).
BUILT = ("volume-owners", "state", "context", "agent")


def base_image() -> str:
    """The harness's base image (BASE_IMAGE in lib.sh), the PYTHON_IMAGE of its builds."""
    for line in (SCRIPTS / "lib.sh").read_text().splitlines():
        if line.startswith("BASE_IMAGE="):
            return line.partition("=")[2].strip("\"'")
    raise AssertionError("deploy/local-cluster/lib.sh sets no BASE_IMAGE")


def docker_host() -> str:
    return f"unix://{RUN_DIR / 'docker.sock'}"


def require_compose_prerequisites() -> None:
    """Skips (fails under CI=true) where the stack cannot run: not root, no Debian docker."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    for binary in (DOCKERD, DOCKER, DOCKER_COMPOSE):
        if not os.access(binary, os.X_OK):
            missing.append(str(binary))
    # images.sh: the base image (mmdebstrap, once) and the pause image (go, gcc).
    for command in ("mmdebstrap", "go", "gcc"):
        if shutil.which(command) is None:
            missing.append(command)
    if missing:
        reason = f"the compose stack needs {', '.join(missing)}"
        if IN_CI:
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    # The stand-in images carry the project's own builds of these.
    tool_path("ferretdb")
    tool_path("livekit-server")


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _run(
    args: list[str], log: Path, env: Mapping[str, str], timeout_s: float, what: str
) -> subprocess.CompletedProcess[str]:
    """Runs ARGS with its output appended to LOG; fails with the output's tail."""
    started = time.monotonic()
    result = subprocess.run(
        args, env=dict(env), capture_output=True, text=True, timeout=timeout_s, cwd=ROOT
    )
    took = time.monotonic() - started
    with log.open("a") as out:
        out.write(f"$ {' '.join(args)}  # {took:.1f} s\n{result.stdout}{result.stderr}\n")
    if result.returncode != 0:
        raise AssertionError(
            f"{what} failed (exit {result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}"
        )
    return result


def docker(*args: str, timeout_s: float = 60) -> str:
    return run_command([DOCKER, *args], {"DOCKER_HOST": docker_host()}, timeout_s)


def dockerd_answers() -> bool:
    try:
        docker("info", "--format", "{{.ID}}", timeout_s=10)
    except (AssertionError, subprocess.TimeoutExpired):
        return False
    return True


@contextlib.contextmanager
def harness_dockerd(log: Path) -> Iterator[None]:
    """The harness's dockerd for the block; stopped after it only if this started it."""

    def docker_sh(action: str) -> None:
        _run(
            ["bash", str(SCRIPTS / "docker.sh"), action],
            log,
            os.environ,
            120,
            f"docker.sh {action}",
        )

    started = not dockerd_answers()
    if started:
        docker_sh("start")
    try:
        yield
    finally:
        if started:
            docker_sh("stop")


def build_images(log: Path) -> None:
    """Every image, tagged e2e (idempotent: seconds when the layers are cached)."""
    _run(["bash", str(SCRIPTS / "images.sh")], log, os.environ, 1800, "images.sh")


@dataclass
class ComposeProject:
    """One compose project of compose.yaml, its own name, ports and secrets."""

    log: Path
    jwt_key: str
    livekit_api_key: str
    livekit_api_secret: str
    name: str = field(default_factory=lambda: f"vacompose{uuid.uuid4().hex[:8]}")
    ports: dict[str, int] = field(default_factory=dict)
    # Bridge interfaces of the project's networks, recorded while they exist.
    bridges: set[str] = field(default_factory=set)
    # The tag `build` gave the images, removed again at the end.
    built_tag: str = ""

    def __post_init__(self) -> None:
        self.ports = {
            "VOICEAGENT_STATE_PORT": free_port(),
            "VOICEAGENT_CONTEXT_PORT": free_port(),
            "VOICEAGENT_AGENT_HEALTH_PORT": free_port(),
            "VOICEAGENT_LIVEKIT_PORT": free_port(),
            "VOICEAGENT_LIVEKIT_TCP_PORT": free_port(),
            "VOICEAGENT_LIVEKIT_UDP_PORT": free_udp_port(),
        }

    @property
    def env(self) -> dict[str, str]:
        """docker-compose's whole environment: nothing of the caller's shell leaks in."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "DOCKER_HOST": docker_host(),
            "VOICEAGENT_JWT_KEY": self.jwt_key,
            "LIVEKIT_API_KEY": self.livekit_api_key,
            "LIVEKIT_API_SECRET": self.livekit_api_secret,
            # The worker refuses to start without a key; no call here reaches a provider.
            "OPENAI_API_KEY": "sk-compose-test",
        }
        return env | {name: str(port) for name, port in self.ports.items()}

    def port(self, service: str) -> int:
        return self.ports[f"VOICEAGENT_{service.upper()}_PORT"]

    def compose(
        self,
        *args: str,
        timeout_s: float = 300,
        overrides: tuple[Path, ...] = (),
        env: Mapping[str, str] | None = None,
    ) -> str:
        command = [str(DOCKER_COMPOSE), "--env-file", str(STANDINS_ENV), "-p", self.name]
        for file in (COMPOSE_FILE, *overrides):
            command += ["-f", str(file)]
        full_env = self.env | dict(env or {})
        return _run([*command, *args], self.log, full_env, timeout_s, f"compose {args[0]}").stdout

    def build(self) -> dict[str, str]:
        """`docker-compose build` as a user runs it, tagged with the project's name, from
        the harness's base image; the image id of each built service."""
        # The harness's dockerd has no bridge: its builds use the host's network (as
        # images.sh's do, which also makes them share the build cache).
        override = self.log.parent / "build-on-host-network.yaml"
        services = {service: {"build": {"network": "host"}} for service in BUILT}
        override.write_text(json.dumps({"services": services}))
        self.compose(
            "build",
            timeout_s=1800,
            overrides=(override,),
            env={
                "VOICEAGENT_TAG": self.name,
                "PYTHON_IMAGE": base_image(),
                # BuildKit through the docker CLI: Debian's, which has it built in.
                "COMPOSE_DOCKER_CLI_BUILD": "1",
                "DOCKER_BUILDKIT": "1",
                "PATH": f"{DOCKER.parent}:{self.env['PATH']}",
            },
        )
        self.built_tag = self.name
        return {
            service: docker(
                "image", "inspect", "--format", "{{.Id}}", self.image(service, self.name)
            ).strip()
            for service in BUILT
        }

    @staticmethod
    def image(service: str, tag: str) -> str:
        return f"voiceagent-{'state' if service == 'volume-owners' else service}:{tag}"

    def up(self) -> None:
        try:
            # Waits for each service's dependencies to be healthy before starting it.
            self.compose("up", "-d", "--no-build")
        finally:
            self.record_bridges()

    def record_bridges(self) -> None:
        for network_id in self.ids("network"):
            # Docker names a user-defined bridge network's interface br-<first 12 of its id>.
            self.bridges.add(f"br-{network_id[:12]}")

    def ids(self, kind: str) -> list[str]:
        """Containers, networks or volumes of this project, by compose's label."""
        label = f"label=com.docker.compose.project={self.name}"
        listing = {
            "container": ["ps", "--all", "--quiet"],
            "network": ["network", "ls", "--quiet", "--no-trunc"],
            "volume": ["volume", "ls", "--quiet"],
        }[kind]
        return docker(*listing, "--filter", label).split()

    def containers(self) -> list[dict[str, Any]]:
        ids = self.ids("container")
        return list(json.loads(docker("inspect", *ids))) if ids else []

    def wait_healthy(self, timeout_s: float = 180) -> None:
        """Every service up, and healthy where it has a healthcheck (the one-shot exited 0)."""
        deadline = time.monotonic() + timeout_s
        while True:
            waiting = []
            for container in self.containers():
                service = container["Config"]["Labels"]["com.docker.compose.service"]
                state = container["State"]
                if state["Status"] == "exited":
                    if service == "volume-owners" and state["ExitCode"] == 0:
                        continue
                    raise AssertionError(f"{service} exited:\n{self.logs()}")
                health = state.get("Health", {}).get("Status", "healthy")
                if state["Status"] != "running" or health != "healthy":
                    waiting.append(f"{service}: {state['Status']}/{health}")
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not healthy after {timeout_s}s: {waiting}\n{self.logs()}")
            time.sleep(1)

    def logs(self) -> str:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            return self.compose("logs", "--no-color", "--tail", "40", timeout_s=60)[-6000:]
        return "(no logs)"

    def down(self) -> None:
        """What a user runs: containers, networks and volumes removed."""
        self.compose("down", "--volumes", "--remove-orphans", timeout_s=300)

    def leftovers(self) -> list[str]:
        """What `down --volumes` removes: containers, networks (and their bridges), volumes."""
        left = [
            f"{kind} {i}" for kind in ("container", "network", "volume") for i in self.ids(kind)
        ]
        return left + [f"bridge {b}" for b in sorted(self.bridges) if (SYS_NET / b).exists()]

    def tagged_images(self) -> list[str]:
        if not self.built_tag:
            return []
        reference = f"reference=*:{self.built_tag}"
        return docker(
            "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "--filter", reference
        ).split()

    def remove_everything(self) -> None:
        """After a failure too: down, then whatever down did not remove, by label. Every
        container's logs go to the log file first."""
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            if self.ids("container"):
                self.compose("logs", "--no-color", "--timestamps", timeout_s=120)
            self.down()
        for kind, remove in (("container", ["rm", "-f", "-v"]), ("network", ["network", "rm"])):
            for item in self.ids(kind):
                with contextlib.suppress(AssertionError):
                    docker(*remove, item)
        for volume in self.ids("volume"):
            with contextlib.suppress(AssertionError):
                docker("volume", "rm", "-f", volume)
        if self.built_tag:
            # Only the tags: the images themselves are the harness's e2e ones.
            for service in ("state", "context", "agent"):
                with contextlib.suppress(AssertionError):
                    docker("image", "rm", self.image(service, self.built_tag))

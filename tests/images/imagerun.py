"""Build the images with podman and start an image's entrypoint without a container runtime.

podman cannot start containers on our machines (its OCI runtime may not set rlimits or cgroups here),
so an image runs from ``podman image mount`` under ``chroot --userspec`` with the image's own numeric
USER, environment, working directory, ENTRYPOINT and CMD, in a private mount namespace (its /proc,
/dev and a tmpfs /tmp vanish with the process). The mounted image is read-only, as under the chart's
readOnlyRootFilesystem; running as its user proves that user can read all it needs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
UNUSABLE = Path("/var/lib/snapserve/podman-unusable")


def require_podman() -> None:
    """Skip, saying why, where this machine cannot build and mount images."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed: `bash ci/setup.d/50-podman.sh` (part of `make test`) installs it")
    if os.geteuid() != 0:
        pytest.skip("podman image mount and chroot need root")
    if UNUSABLE.is_file():  # written by ci/setup.d/50-podman.sh where podman cannot unpack layers
        pytest.skip(UNUSABLE.read_text().strip())


def build(prefix: str, tag: str | None, log: Path, **env: str) -> dict[str, str]:
    """``ci/build-images.sh --local`` (both images); the build log goes to ``log``.

    ``tag=None`` leaves TAG to the script's default. Returns {component: the image name it built}.
    """
    base = {k: v for k, v in os.environ.items() if k not in ("TAG", "MODEL_SNAPSHOT", "COMPONENTS")}
    with log.open("w") as out:
        rc = subprocess.run(["bash", "ci/build-images.sh", "--local"], check=False, cwd=ROOT, stdout=out,
                            stderr=subprocess.STDOUT, timeout=1500,
                            env={**base, "IMAGE_PREFIX": prefix, **({"TAG": tag} if tag else {}), **env}).returncode
    text = log.read_text()
    assert rc == 0, f"image build failed (rc={rc}):\n" + "\n".join(text.splitlines()[-40:])
    built = re.findall(r"^build-images: \S+ build (\S+/(predictor|transformer):\S+)$", text, re.M)
    return {component: name for name, component in built}


@dataclasses.dataclass(frozen=True)
class Image:
    name: str
    root: Path  # the mounted root file system
    config: dict  # the OCI config: User, Env, Entrypoint, Cmd, WorkingDir
    layers: list[str]
    size: int

    @classmethod
    def mount(cls, name: str) -> Image:
        info = json.loads(podman("image", "inspect", name))[0]
        root = Path(podman("image", "mount", name).strip())
        return cls(name, root, info["Config"], info["RootFS"]["Layers"], info["Size"])

    def unmount(self) -> None:
        subprocess.run(["podman", "image", "umount", self.name], check=False, capture_output=True)

    def history(self) -> list[tuple[str, int]]:
        """(created_by, size) per history entry, oldest first."""
        entries = json.loads(podman("history", "--no-trunc", "--format", "json", self.name))
        return [(e.get("CreatedBy", e.get("createdBy", "")), int(e.get("Size", e.get("size", 0))))
                for e in reversed(entries)]

    def start(self, args: list[str], log: Path, binds: dict[str, Path] | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen:
        """The entrypoint with ``args`` in place of CMD, as the image's USER; the pid is the server's.

        ``binds`` maps a folder inside the image to a host folder mounted over it, read-only; ``env`` is
        added to the image's environment (a pod spec's env), winning over it.
        """
        user = self.config["User"]
        if ":" not in user:
            user += f":{user}"
        env = [*(self.config.get("Env") or []), *(f"{k}={v}" for k, v in (env or {}).items())]
        argv = [*self.config["Entrypoint"], *args]
        binds_sh = "".join(f'mount --bind "{host}" "$r{inside}"; mount -o remount,bind,ro "$r{inside}"; '
                           for inside, host in (binds or {}).items())
        mount = ('set -e; r="$1"; shift; mount -t proc proc "$r/proc"; mount --rbind /dev "$r/dev"; '
                 f'mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"; {binds_sh}'
                 'exec chroot --userspec="$USERSPEC" "$r" "$@"')
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "sh", str(self.root),
               "/usr/bin/env", "-i", "-C", self.config.get("WorkingDir") or "/", *env, *argv]
        with log.open("w") as out:
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={"PATH": os.environ["PATH"], "USERSPEC": user})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def podman(*args: str) -> str:
    return subprocess.run(["podman", *args], check=True, capture_output=True, text=True).stdout


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url}: server exited rc={proc.returncode}:\n{tail(log)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url}: not ready after {timeout:.0f}s:\n{tail(log)}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")

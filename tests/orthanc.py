"""A real Orthanc PACS with its DICOMweb plugin, started for the tests on loopback.

Orthanc 1.10 (Debian's package) has no bind-address option: `RemoteAccessAllowed: false` makes
it refuse every client but localhost, authentication is on, storage is a temporary folder, and
the DICOM port is off. Started from a generated configuration and stopped by its PID.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc/plugins"))
PLUGIN_NAME = "libOrthancDicomWeb.so"


@dataclass(frozen=True)
class Orthanc:
    """A running Orthanc: its REST root, its DICOMweb root and the credentials it accepts."""

    url: str
    username: str
    password: str
    pid: int

    @property
    def dicomweb(self) -> str:
        """The DICOMweb root, as `XRAY_PACS_URL` takes it."""
        return f"{self.url}/dicom-web"

    def session(self) -> requests.Session:
        """An authenticated session for checking what the service wrote."""
        session = requests.Session()
        session.auth = (self.username, self.password)
        return session


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def find_orthanc() -> tuple[str, Path] | None:
    """The Orthanc binary and its DICOMweb plugin, or None when either is missing."""
    binary = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin")
    plugin = next((folder / PLUGIN_NAME for folder in PLUGIN_DIRS if (folder / PLUGIN_NAME).is_file()), None)
    return (binary, plugin) if binary and plugin else None


@contextmanager
def running_orthanc(folder: Path, binary: str, plugin: Path) -> Iterator[Orthanc]:
    """Start Orthanc with a generated configuration in `folder`; stop it by its PID afterwards."""
    port = free_port()
    password = secrets.token_urlsafe(12)
    config = {
        "Name": "XRAY-TEST-PACS",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {"xray": password},
        "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "HttpTimeout": 30,
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=1))
    log = (folder / "orthanc.log").open("wb")
    process = subprocess.Popen([binary, str(path)], stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    orthanc = Orthanc(f"http://127.0.0.1:{port}", "xray", password, process.pid)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(folder / 'orthanc.log').read_text()[-2000:]}")
            try:
                if orthanc.session().get(f"{orthanc.dicomweb}/studies", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Orthanc did not start in 60 s")
            time.sleep(0.2)
        yield orthanc
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        log.close()

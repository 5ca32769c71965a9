"""The `fetch` section of params.yaml: external files, each pinned by its sha256."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tasks.errors import ConfigError
from tasks.typed import http_url

CASCADE_URL = "https://raw.githubusercontent.com/nagadomi/lbpcascade_animeface/master/lbpcascade_animeface.xml"
CASCADE_SHA256 = "9376d30ac38db6bda2a68b88b3b76bbd7e6aa33af47f7f5c76bc88ca75f1ce30"


@dataclass(frozen=True)
class ExternalFile:
    url: str = CASCADE_URL  # where it is published
    sha256: str = CASCADE_SHA256  # what it must hash to: anything else is refused
    path: str = "models/lbpcascade_animeface.xml"  # where the DAG wants it (a DVC out of this stage)
    mirrors: tuple[str, ...] = ()  # local copies tried first, in order (offline machines); each verified

    def validate(self, key: str) -> None:
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ConfigError(f"{key}.sha256: expected 64 lowercase hex digits, got {self.sha256!r}")
        http_url(self.url, f"{key}.url")  # http or https: the sha256 pins the content either way


@dataclass(frozen=True)
class FetchHttp:
    contact: str = "moeflow-user@example.com"  # in the User-Agent
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 3
    max_bytes: int = 50_000_000


@dataclass(frozen=True)
class FetchConfig:
    cascade: ExternalFile = field(default_factory=ExternalFile)
    http: FetchHttp = field(default_factory=FetchHttp)

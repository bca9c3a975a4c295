"""The customer license file: who, which modules, which version line, until when."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path


@dataclass(frozen=True)
class LicenseStatus:
    valid: bool
    reason: str | None = None
    customer_id: str | None = None
    modules: list[str] = field(default_factory=list)
    version_line: str | None = None
    expires: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {"customer_id": self.customer_id, "valid": self.valid, "reason": self.reason,
                "modules": self.modules, "version_line": self.version_line,
                "expires": self.expires}


def version_line(version: str) -> str:
    """"3.2.1" -> "3.2"."""
    return ".".join(version.split(".")[:2])


def check(path: Path, release_version: str, today: date | None = None) -> LicenseStatus:
    """Whether the license at `path` covers this release today; never raises."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return LicenseStatus(False, f"license file {path} not found")
    except (OSError, ValueError) as exc:
        return LicenseStatus(False, f"license file {path} unreadable: {exc}")
    try:
        customer, modules = str(data["customer_id"]), [str(m) for m in data["modules"]]
        line, expires = str(data["version_line"]), date.fromisoformat(data["expires"])
    except (KeyError, TypeError, ValueError) as exc:
        return LicenseStatus(False, f"license file {path} invalid: {type(exc).__name__} {exc}")
    found = {"customer_id": customer, "modules": modules, "version_line": line,
             "expires": expires.isoformat()}
    if expires < (today or date.today()):
        return LicenseStatus(False, f"license expired on {expires.isoformat()}", **found)
    if line != version_line(release_version):
        return LicenseStatus(
            False, f"license is for version line {line}, this release is {release_version}",
            **found)
    return LicenseStatus(True, None, **found)

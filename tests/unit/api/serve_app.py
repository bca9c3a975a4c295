"""The API as `emsops serve` runs it, in its own process, for the kill-and-restart test.

Settings come from EMSOPS_* variables. The one difference from `emsops serve` is the verifier:
it stands in for the testinfra suites, which need the lab of hosts (the lab tests use the real
one)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import uvicorn

from api.app import create_app
from api.settings import Settings


def passing_verifier(inventory: Path, limit: str | None, expect: Mapping[str, str]) -> dict:
    hosts = (limit or "").split(",")
    return {"ok": True, "hosts": {h: {"ok": True, "failures": []} for h in hosts}}


if __name__ == "__main__":
    app = create_app(Settings(), verifier=passing_verifier)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="info")

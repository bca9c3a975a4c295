"""`emsops serve`: the API under uvicorn."""

from __future__ import annotations

import uvicorn


def serve(host: str, port: int) -> None:
    uvicorn.run("api.app:app", host=host, port=port, proxy_headers=False, access_log=True)

"""``python -m gateway``: run the gateway with uvicorn."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from .app import create_app
from .settings import Settings


def main() -> None:
    try:
        settings = Settings()
    except ValidationError as exc:
        # A refused configuration says why and how to fix it, without a traceback.
        reasons = "; ".join(
            str(e["ctx"]["error"]) if "ctx" in e else e["msg"] for e in exc.errors()
        )
        sys.exit(f"gateway: refusing to start: {reasons}")
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.gateway_port,
        log_level=settings.log_level.lower(),
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()

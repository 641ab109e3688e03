"""``report_metrics()``: push a trial's metrics to shipyard (Katib's Push collector).

Inside a trial whose experiment uses ``metricsCollectorSpec.collector.kind: Push``, the
workload's environment carries ``SHIPYARD_METRICS_URL`` and ``SHIPYARD_METRICS_TOKEN``::

    from shipyard.metrics import report_metrics
    report_metrics({"accuracy": 0.93, "loss": 0.21}, step=3)

Standard library only, so any training script can use it.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

URL_ENV, TOKEN_ENV = "SHIPYARD_METRICS_URL", "SHIPYARD_METRICS_TOKEN"


class MetricsReportError(RuntimeError):
    """The report did not reach shipyard, or shipyard refused it."""


def report_metrics(
    metrics: dict[str, Any], step: int | None = None, timeout_seconds: float = 10.0
) -> None:
    """Send ``{name: number}`` for this trial; raises MetricsReportError on failure."""
    url, token = os.environ.get(URL_ENV), os.environ.get(TOKEN_ENV)
    if not url or not token:
        raise MetricsReportError(
            f"{URL_ENV} and {TOKEN_ENV} are not set: report_metrics() "
            "works inside a trial whose collector kind is Push"
        )
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = {
        "metrics": [
            {
                "name": str(k),
                "value": str(v),
                "timestamp": stamp,
                **({"step": int(step)} if step is not None else {}),
            }
            for k, v in metrics.items()
        ]
    }
    headers = {"Content-Type": "application/json", "X-Shipyard-Trial-Token": token}
    # The gateway admits the request as the workload's service account; the trial token
    # then says which trial it may report for.
    bearer = os.environ.get("SHIPYARD_TOKEN", "")
    if not bearer and os.environ.get("SHIPYARD_TOKEN_FILE"):
        try:
            with open(os.environ["SHIPYARD_TOKEN_FILE"]) as f:
                bearer = f.read().strip()
        except OSError:
            bearer = ""
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_seconds) as response:  # noqa: S310
            response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise MetricsReportError(f"shipyard refused the metrics ({exc.code}): {detail}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise MetricsReportError(f"could not reach {url}: {exc}") from None

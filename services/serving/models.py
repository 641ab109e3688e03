"""Kinds served by the serving service (KServe's serving.kserve.io/v1beta1 API).

The specs are stored as given until the serving domain lands (its own issue).
"""

from services.common.resources import PrinterColumn, ResourceKind

SERVICE = "serving"

INFERENCE_SERVICE = ResourceKind(
    "serving.kserve.io", "v1beta1", "InferenceService", "inferenceservices", None, SERVICE,
    short_names=("isvc",),
    columns=(PrinterColumn("URL", "status.url"),
             PrinterColumn("READY", "status.conditions[type=Ready].status")))

KINDS = (INFERENCE_SERVICE,)

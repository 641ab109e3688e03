"""Kinds served by the AutoML service (Katib's kubeflow.org/v1beta1 API).

The specs are stored as given until the AutoML domain lands (its own issue).
"""

from services.common.resources import PrinterColumn, ResourceKind

SERVICE = "automl"
_GROUP, _VERSION = "kubeflow.org", "v1beta1"
_CONDITION = PrinterColumn("STATUS", "status.conditions[-1].type")

EXPERIMENT = ResourceKind(_GROUP, _VERSION, "Experiment", "experiments", None, SERVICE,
                          short_names=("exp",), columns=(_CONDITION,))
TRIAL = ResourceKind(_GROUP, _VERSION, "Trial", "trials", None, SERVICE, columns=(_CONDITION,))
SUGGESTION = ResourceKind(_GROUP, _VERSION, "Suggestion", "suggestions", None, SERVICE,
                          columns=(PrinterColumn("REQUESTED", "spec.requests"),
                                   PrinterColumn("ASSIGNED", "status.suggestionCount")))

KINDS = (EXPERIMENT, TRIAL, SUGGESTION)

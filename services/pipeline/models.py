"""Kinds served by the pipeline service (Argo's argoproj.io/v1alpha1 API)."""

from services.common.resources import PrinterColumn, ResourceKind
from services.pipeline.spec import CronWorkflowSpec, WorkflowSpec, WorkflowTemplateSpec
from services.pipeline.validation import (
    validate_cron_object,
    validate_template_object,
    validate_workflow_object,
)

SERVICE = "pipeline"
_GROUP, _VERSION = "argoproj.io", "v1alpha1"
FINALIZER = "pipeline.shipyard.io/cleanup"
# Bumped by a retry request (Argo or KFP API); the controller then resets the failed nodes.
RETRY_ANNOTATION = "pipeline.shipyard.io/retry-generation"

WORKFLOW = ResourceKind(
    _GROUP,
    _VERSION,
    "Workflow",
    "workflows",
    WorkflowSpec,
    SERVICE,
    short_names=("wf",),
    finalizer=FINALIZER,
    validate=validate_workflow_object,
    columns=(
        PrinterColumn("STATUS", "status.phase"),
        PrinterColumn("PROGRESS", "status.progress"),
        PrinterColumn("MESSAGE", "status.message", wide=True),
    ),
)
CRON_WORKFLOW = ResourceKind(
    _GROUP,
    _VERSION,
    "CronWorkflow",
    "cronworkflows",
    CronWorkflowSpec,
    SERVICE,
    short_names=("cwf", "cronwf"),
    validate=validate_cron_object,
    columns=(
        PrinterColumn("SCHEDULE", "spec.schedule"),
        PrinterColumn("SUSPENDED", "spec.suspend"),
    ),
)
WORKFLOW_TEMPLATE = ResourceKind(
    _GROUP,
    _VERSION,
    "WorkflowTemplate",
    "workflowtemplates",
    WorkflowTemplateSpec,
    SERVICE,
    short_names=("wftmpl",),
    validate=validate_template_object,
)

KINDS = (WORKFLOW, CRON_WORKFLOW, WORKFLOW_TEMPLATE)

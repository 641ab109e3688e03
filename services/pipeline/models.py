"""Kinds served by the pipeline service (Argo's argoproj.io/v1alpha1 API)."""

from services.common import catalog
from services.common.resources import ResourceKind
from services.pipeline.spec import CronWorkflowSpec, WorkflowSpec, WorkflowTemplateSpec
from services.pipeline.validation import (
    validate_cron_object,
    validate_template_object,
    validate_workflow_object,
)

SERVICE = catalog.WORKFLOW.service
FINALIZER = "pipeline.shipyard.io/cleanup"
# Bumped by a retry request (Argo or KFP API); the controller then resets the failed nodes.
RETRY_ANNOTATION = "pipeline.shipyard.io/retry-generation"

WORKFLOW = ResourceKind(
    **catalog.WORKFLOW.resource_kind_fields(),
    spec_model=WorkflowSpec,
    finalizer=FINALIZER,
    validate=validate_workflow_object,
)
CRON_WORKFLOW = ResourceKind(
    **catalog.CRON_WORKFLOW.resource_kind_fields(),
    spec_model=CronWorkflowSpec,
    validate=validate_cron_object,
)
WORKFLOW_TEMPLATE = ResourceKind(
    **catalog.WORKFLOW_TEMPLATE.resource_kind_fields(),
    spec_model=WorkflowTemplateSpec,
    validate=validate_template_object,
)

KINDS = (WORKFLOW, CRON_WORKFLOW, WORKFLOW_TEMPLATE)

"""Kinds served by the pipeline service (Argo's argoproj.io/v1alpha1 API).

The specs are stored as given until the workflow engine lands (its own issue).
"""

from services.common.resources import PrinterColumn, ResourceKind

SERVICE = "pipeline"
_GROUP, _VERSION = "argoproj.io", "v1alpha1"

WORKFLOW = ResourceKind(_GROUP, _VERSION, "Workflow", "workflows", None, SERVICE,
                        short_names=("wf",),
                        columns=(PrinterColumn("STATUS", "status.phase"),
                                 PrinterColumn("PROGRESS", "status.progress"),
                                 PrinterColumn("MESSAGE", "status.message", wide=True)))
CRON_WORKFLOW = ResourceKind(_GROUP, _VERSION, "CronWorkflow", "cronworkflows", None, SERVICE,
                             short_names=("cwf", "cronwf"),
                             columns=(PrinterColumn("SCHEDULE", "spec.schedule"),
                                      PrinterColumn("SUSPENDED", "spec.suspend")))
WORKFLOW_TEMPLATE = ResourceKind(_GROUP, _VERSION, "WorkflowTemplate", "workflowtemplates",
                                 None, SERVICE, short_names=("wftmpl",))

KINDS = (WORKFLOW, CRON_WORKFLOW, WORKFLOW_TEMPLATE)

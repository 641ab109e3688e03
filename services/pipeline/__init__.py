"""The pipeline service: Argo Workflows and the Kubeflow Pipelines API."""

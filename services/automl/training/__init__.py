"""The Training Operator's kinds, served by the automl service: ``PyTorchJob`` (kubeflow.org/v1).

``models`` (spec and ResourceKind), ``validation`` (the operator's checks, with field paths),
``replicas`` (each replica as a runtime job workload, with torch.distributed's environment),
``status`` (conditions and replicaStatuses as the operator reports them), ``controller``
(the reconcile loop) and ``api`` (replica logs). docs/automl.md, "Training jobs".
"""

"""An InferenceGraph's router: the workload that runs requests through a graph's nodes.

:mod:`.engine` holds KServe's routing semantics (Sequence, Switch, Ensemble, Splitter),
:mod:`.gjson` the condition language, :mod:`.upstream` the way to the InferenceServices
(the gateway, with the workload's own token) and :mod:`.app` the HTTP server.
"""

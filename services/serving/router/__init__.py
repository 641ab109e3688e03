"""An InferenceGraph's router: the workload that runs requests through a graph's nodes.

:mod:`.engine` holds KServe's routing semantics (Sequence, Switch, Ensemble, Splitter) on
the condition language of :mod:`services.common.gjson`, :mod:`.upstream` the way to the
InferenceServices (the gateway, with the workload's own token) and :mod:`.app` the HTTP
server.
"""

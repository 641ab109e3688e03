"""The InferenceService reconciler: revisions as workloads, canary traffic, KServe status.

Every distinct ``spec.predictor`` (ignoring ``canaryTrafficPercent``) is a *revision*, run as
one server workload ``isvc-{name}-{n}`` whose labels carry the revision number and a hash of
the predictor spec; a spec change therefore starts revision n+1 beside the running one, as
Knative does. Traffic follows KServe's canary rules:

- the first revision takes 100% once ready;
- without ``canaryTrafficPercent`` (or at 100) a new ready revision is promoted: it becomes
  ``latestRolledoutRevision``, the old one ``previousRolledoutRevision``, and the old workload
  is deleted;
- with ``canaryTrafficPercent: N`` both run, N% to the latest and the rest to the rolled-out
  one; 0 rolls back (all traffic to the rolled-out revision).

The gateway reads the endpoints this controller writes beside KServe's fields:
``components.predictor.endpoint`` (the rolled-out revision) and ``latestEndpoint`` (the
canary, only while a split is live), weighted by ``spec.predictor.canaryTrafficPercent``
(see gateway.routes.targets_from_object). Workload readiness is not an event, so a reconcile
that waits for a server asks to run again shortly (bounded back-off) and the periodic resync
catches servers that die later.

Scale to zero (``minReplicas: 0``): the gateway reports data-plane activity
(``services.common.activity``) into an ``IdleClock``. A settled service idle for
``SHIPYARD_SCALE_TO_ZERO_SECONDS`` first loses its endpoint in status (``desiredReplicas``
0, so the gateway stops routing to it), and ``drain_seconds`` later its workload is deleted.
It stays Ready with its traffic and revisions, as a Knative-backed KServe service does; only
``actualReplicas`` drops to 0. A request held by the gateway wakes it: the rolled-out
revision is started again under its own number, and the endpoint returns once its readiness
probe passes (however long the model takes to load: nothing is stopped while it starts).

Autoscaling (``services.serving.autoscale``): a revision runs as many replicas as the
load the gateway reports asks for (concurrency, or requests per second with ``scaleMetric:
rps``), between ``minReplicas`` and ``maxReplicas``. Replica
0 is ``isvc-{name}-{n}``, the others ``isvc-{name}-{n}-r{i}``; status lists the ready ones'
endpoints (``endpoints``, ``latestEndpoints``) and the gateway spreads each revision's
share of the traffic over them. A replica no longer wanted leaves ``endpoints`` first and is
deleted ``drain_seconds`` later. A transformer scales on the same load the same way
(services.serving.components).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from services.common.activity import Activity
from services.common.controller import Controller, Key
from services.common.hostpath import REFUSAL as HOST_PATH_REFUSAL
from services.common.resources import ResourceKind, ResourceStore
from services.common.resources.store import WatchEvent
from services.common.runtime import Phase, Runtime, WorkloadSpec, WorkloadStatus, placement
from services.serving import isvc_status
from services.serving.autoscale import desired_replicas, replica_bounds
from services.serving.components import (
    Scaling,
    components_ready,
    data_plane_prefix,
    predictor_digest,
    reconcile_components,
    split_components,
    with_components,
)
from services.serving.credentials import CredentialsError, S3Credentials, s3_credentials
from services.serving.idle import IdleClock, LoadWindow
from services.serving.modelcache import ModelCache
from services.serving.models import (
    INFERENCE_SERVICE,
    SECRET,
    SERVICE_ACCOUNT,
    predictor_model,
)
from services.serving.polling import Backoff
from services.serving.revisions import (
    revision_name,
    revision_number,
    workload_name,
)
from services.serving.runtimes import RuntimeNotAvailable, register_builtin_runtimes
from services.serving.servers import model_server
from services.serving.storage import Storage, StorageError, StoragePending, resolve_storage

log = logging.getLogger(__name__)

ISVC_LABEL = "serving.kserve.io/inferenceservice"
REVISION_LABEL = "serving.shipyard.io/revision"
HASH_LABEL = "serving.shipyard.io/predictor-hash"
REPLICA_LABEL = "serving.shipyard.io/replica"
FINALIZER = "inferenceservice.finalizers"
#: Runtime reasons for a workload that never started; restarting it cannot help.
LAUNCH_ERRORS = (
    "PersistentVolumeClaimNotFound",
    "HostPathNotAllowed",
    "InvalidMount",
    "SandboxUnavailable",
)
BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _owner(isvc: dict[str, Any]) -> dict[str, Any]:
    """The owner reference of an InferenceService's workloads."""
    return {
        "apiVersion": INFERENCE_SERVICE.api_version,
        "kind": INFERENCE_SERVICE.kind,
        "name": isvc["metadata"]["name"],
        "uid": isvc["metadata"].get("uid"),
    }


def _by_revision(
    owned: list[WorkloadStatus],
) -> tuple[dict[int, WorkloadStatus], dict[tuple[int, int], WorkloadStatus]]:
    """Replica 0 of each revision by number, and the other replicas by (revision, replica)."""
    by_number: dict[int, WorkloadStatus] = {}
    secondaries: dict[tuple[int, int], WorkloadStatus] = {}
    for w in owned:
        number, replica = (int(w.labels.get(k) or "0") for k in (REVISION_LABEL, REPLICA_LABEL))
        if replica:
            secondaries[(number, replica)] = w
        else:
            by_number[number] = w
    return by_number, secondaries


def _model_block(predictor: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """(the model spec, its format) for ``model`` and the legacy framework blocks; None for
    containers."""
    found = predictor_model(predictor)
    return (found[1], found[2]) if found is not None else None


class InferenceServiceController(Controller):
    """Reconciles InferenceServices into model-server workloads and KServe status."""

    kinds = (INFERENCE_SERVICE,)
    resync_seconds = 5.0  # also notices servers that died (readiness is not an event)
    #: Re-check while a revision starts (seconds): a status read is a small file read, and
    #: every tenth of a second here is a tenth of a second of cold start (scale from zero).
    poll_min, poll_max = 0.1, 0.25
    #: Re-check of a revision that failed (it may recover, e.g. its claim appears).
    poll_failed = 2.0
    #: Between withdrawing an idle service's endpoint and deleting its server, so that the
    #: gateway has the route change before the server goes (requests already picked finish).
    drain_seconds = 1.0

    def __init__(
        self,
        store: ResourceStore,
        runtime: Runtime,
        gateway_url: str,
        labels: dict[str, str] | None = None,
        clock: IdleClock | None = None,
        scale_to_zero_seconds: float = 60.0,
        window: LoadWindow | None = None,
        models: ModelCache | None = None,
    ) -> None:
        super().__init__(store)
        #: Downloads of s3:// and http(s):// models (None: only volumes are served).
        self.models = models
        self.runtime = runtime
        self.gateway_url = gateway_url.rstrip("/")
        self.labels = dict(labels or {})
        self.clock = clock or IdleClock()
        self.scale_to_zero_seconds = scale_to_zero_seconds
        self._polls = Backoff(self.poll_min, self.poll_max, self.poll_failed)
        self._draining: dict[tuple[str, str], float] = {}
        self.window = window or LoadWindow(60.0)
        #: Autoscaled services: per part ("predictor", "transformer"), its spec and the
        #: replicas last decided.
        self._scaling: dict[tuple[str, str], dict[str, tuple[dict[str, Any], int]]] = {}
        #: Replicas no longer wanted, by workload name: since when.
        self._surplus: dict[str, float] = {}
        #: InferenceServices that read credentials through a ServiceAccount, by namespace:
        #: a change to a Secret or ServiceAccount there wakes them.
        self._with_account: dict[str, set[str]] = {}

    def keys_for(self, kind: ResourceKind, event: WatchEvent) -> Sequence[Key]:
        """An InferenceService itself; for a Secret or ServiceAccount, the namespace's
        InferenceServices that name a ServiceAccount (a fixed Secret retries at once)."""
        if kind.kind in (SECRET.kind, SERVICE_ACCOUNT.kind):
            namespace = (event.object.get("metadata") or {}).get("namespace", "")
            return [
                Key(INFERENCE_SERVICE.kind, namespace, name)
                for name in sorted(self._with_account.get(namespace, ()))
            ]
        return super().keys_for(kind, event)

    def _note_account(self, namespace: str, name: str, account: str | None) -> None:
        names = self._with_account.setdefault(namespace, set())
        if account:
            names.add(name)
        else:
            names.discard(name)

    async def start(self) -> None:
        # Take over the runtime's workloads before the first reconcile: a crash between
        # writing a server's spec and launching it left one that only adoption starts (the
        # reconcile lists it and waits for it to become ready, so nothing else would).
        await self.runtime.adopt()
        created = await register_builtin_runtimes(self.store)
        if created:
            log.info("registered built-in ClusterServingRuntimes: %s", ", ".join(created))
        await super().start()

    def on_report(self, report: Activity) -> None:
        """An activity report (already counted by the monitor): reconcile now when requests
        are held, or when the replica count it implies differs from the last decision."""
        key = (report.namespace, report.name)
        parts = self._scaling.get(key, {}).values()
        if report.waiting or any(
            desired_replicas(spec, self.window.observed(*key)) != decided for spec, decided in parts
        ):
            self.enqueue(INFERENCE_SERVICE, *key)

    # ---------------------------------------------------------------- workloads
    async def workload_for(
        self, isvc: dict[str, Any], number: int, digest: str, replica: int = 0
    ) -> WorkloadSpec:
        """The server workload of one revision (its replica ``replica``). Replica 0 starts a
        revision (new, activated from zero, restarted after a stop), the others join it; so
        for replica 0 a model used in place is looked at again (ModelCache.resolve's
        ``renew``), and the others get what it got."""
        meta, predictor = isvc["metadata"], isvc["spec"]["predictor"]
        ns, name = meta["namespace"], meta["name"]
        rev = revision_name(name, number)
        # One BLAS thread per server: requests are small and concurrent, and spinning BLAS
        # threads on a few cores halve throughput (the user's env may still override it).
        env = [
            *({"name": var, "value": "1"} for var in BLAS_THREAD_VARS),
            {"name": "K_REVISION", "value": rev},
            {"name": "K_SERVICE", "value": f"{name}-predictor"},
            {"name": "K_CONFIGURATION", "value": f"{name}-predictor"},
        ]
        labels = {
            **self.labels,
            **(predictor.get("labels") or {}),
            ISVC_LABEL: name,
            REVISION_LABEL: str(number),
            REPLICA_LABEL: str(replica),
            HASH_LABEL: digest,
        }
        owner = _owner(isvc)
        files: dict[str, str] = {}  # read-only files in the workload: the storage plan
        init: list[dict[str, Any]] = []  # a user's server's storage initializer
        found = _model_block(predictor)
        if found is not None:
            block, fmt = found

            async def fetch() -> Storage:  # once a runtime serves the model (none: no download)
                uri = block["storageUri"]
                credentials = await self._credentials(ns, predictor, uri)
                return await resolve_storage(
                    ns, uri, self.models, digest, credentials, renew=replica == 0
                )

            batcher = predictor.get("batcher")
            server = await model_server(self.store, self.runtime, isvc, block, fmt, fetch, batcher)
            storage = server.storage
            command, args, image = server.command, server.args, server.image
            probe_path = server.probe_path(name)
            labels.update(server.labels)
            env += server.env
            container = server.container or block
            volumes, mounts, files = storage.volumes, storage.mounts, storage.files
            init = server.init
        else:
            container = predictor["containers"][0]
            image = container.get("image")
            command, args = container.get("command") or [], container.get("args") or []
            http_get = (container.get("readinessProbe") or {}).get("httpGet") or {}
            probe_path = http_get.get("path") or ""
            volumes, mounts = [], []
            env.append({"name": "SHIPYARD_PATH_PREFIX", "value": data_plane_prefix(isvc)})
        env += [
            {"name": e["name"], "value": e.get("value") or ""} for e in container.get("env") or []
        ]
        # The predictor's own pod volumes (persistentVolumeClaim, emptyDir) and mounts.
        for i, volume in enumerate(predictor.get("volumes") or []):
            if volume.get("hostPath") is not None:  # stored before the API refused it
                raise ValueError(f"spec.predictor.volumes[{i}].hostPath: {HOST_PATH_REFUSAL}")
        volumes = [*volumes, *(predictor.get("volumes") or [])]
        mounts = [*mounts, *(container.get("volumeMounts") or [])]
        resources = container.get("resources") or {}
        return WorkloadSpec.model_validate(
            {
                "kind": "server",
                "namespace": ns,
                "name": workload_name(name, number, replica),
                "command": command,
                "args": args,
                "env": env,
                "image": image,
                "resources": {k: v for k, v in resources.items() if v},
                "volumes": volumes,
                "volumeMounts": mounts,
                "readinessProbe": {
                    "httpGet": {"path": probe_path},
                    "periodSeconds": 5,
                    "timeoutSeconds": 2,
                    "failureThreshold": 3,
                }
                if probe_path
                else None,
                "labels": labels,
                "owner": owner,
                **placement(predictor, container),
                "files": files,
                "initContainers": init,
            }
        )

    async def _credentials(
        self, namespace: str, predictor: dict[str, Any], uri: str
    ) -> S3Credentials | None:
        """An ``s3://`` model's credentials from ``serviceAccountName`` (None without one);
        StorageError, naming what is missing, when the ServiceAccount or Secret is."""
        account = predictor.get("serviceAccountName")
        if not account or not uri.startswith("s3://"):
            return None
        try:
            return await s3_credentials(self.store, namespace, account)
        except CredentialsError as exc:
            raise StorageError(f"storageUri {uri!r}: {exc}") from None

    async def _delete_workloads(self, workloads: list[WorkloadStatus]) -> None:
        for w in workloads:
            await self.runtime.delete(w.namespace, w.name)
            log.info("deleted model server %s/%s", w.namespace, w.name)

    # ---------------------------------------------------------------- reconcile
    async def _remove(
        self, namespace: str, name: str, owned: list[WorkloadStatus], *, finalize: bool
    ) -> None:
        """A deleted InferenceService: its servers go, then its finalizer; forget it."""
        self._note_account(namespace, name, None)
        await self._delete_workloads(owned)
        if finalize:
            await self.store.remove_finalizer(INFERENCE_SERVICE, namespace, name, FINALIZER)
        self._polls.forget((namespace, name))
        self._draining.pop((namespace, name), None)
        self._scaling.pop((namespace, name), None)
        self.clock.forget(namespace, name)
        self.window.forget(namespace, name)

    async def _new_revision(
        self,
        isvc: dict[str, Any],
        comp: dict[str, Any],
        by_number: dict[int, WorkloadStatus],
        digest: str,
    ) -> tuple[int | None, str | None, str | None, str | None]:
        """Start the next revision for the current predictor spec (added to ``by_number``):
        (its number, or the last created one's when it cannot start yet; why it failed;
        why it is pending; KServe's reason for a failure of the spec, such as
        NoSupportingRuntime)."""
        meta = isvc["metadata"]
        number = max([0, *by_number, revision_number(comp.get("latestCreatedRevision"))]) + 1
        try:
            spec = await self.workload_for(isvc, number, digest)
        except StoragePending as exc:
            return revision_number(comp.get("latestCreatedRevision")) or None, None, str(exc), None
        except (StorageError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, RuntimeNotAvailable) else None
            return (
                revision_number(comp.get("latestCreatedRevision")) or None,
                str(exc),
                None,
                reason,
            )
        by_number[number] = await self.runtime.apply(spec)
        log.info("created revision %s of %s/%s", number, meta["namespace"], meta["name"])
        return number, None, None, None

    async def _latest_revision(
        self,
        isvc: dict[str, Any],
        comp: dict[str, Any],
        by_number: dict[int, WorkloadStatus],
        digest: str,
    ) -> tuple[int | None, str | None, str | None, str | None] | None:
        """The revision of the current predictor spec, started if there is none (see
        ``_new_revision`` for the tuple); None when its server was deleted to be relaunched
        (its claim appeared)."""
        latest = next((n for n, w in by_number.items() if w.labels.get(HASH_LABEL) == digest), None)
        if latest is None:
            return await self._new_revision(isvc, comp, by_number, digest)
        if await self._relaunch_if_claim_appeared(by_number[latest]):
            return None
        return latest, None, None, None

    async def reconcile(self, kind: ResourceKind, namespace: str, name: str) -> None:
        isvc = await self.store.find(INFERENCE_SERVICE, namespace, name)
        owned = await self.runtime.list({ISVC_LABEL: name}, namespace=namespace)
        if isvc is None or isvc["metadata"].get("deletionTimestamp"):
            await self._remove(namespace, name, owned, finalize=isvc is not None)
            return
        owned, parts = split_components(owned)  # the predictor's; transformer, explainer
        predictor = isvc["spec"]["predictor"]
        self._note_account(namespace, name, predictor.get("serviceAccountName"))
        digest = predictor_digest(isvc)
        status = isvc.get("status") or {}
        comp = (status.get("components") or {}).get("predictor") or {}
        by_number, secondaries = _by_revision(owned)
        scales_to_zero = int(predictor.get("minReplicas", 1)) == 0
        if not owned and self._scaled_to_zero(isvc, comp):
            # Only a report wakes it (not a restart of this service, which heard none yet).
            if not self.clock.active_within(namespace, name, self.scale_to_zero_seconds):
                self._polls.forget((namespace, name))
                return
            await self._activate(isvc, comp, by_number, digest)
        idle = scales_to_zero and self.clock.idle_for(namespace, name) >= self.scale_to_zero_seconds
        await self._restart_stopped(isvc, by_number, digest)

        # The latest revision: the workload of the current predictor spec, else a new one.
        found = await self._latest_revision(isvc, comp, by_number, digest)
        if found is None:
            return  # deleted; the store's next change or the poll below recreates it
        latest, failure, pending, reason = found

        # Roll out: who takes the stable traffic, who is previous.
        rolled = revision_number(comp.get("latestRolledoutRevision")) or None
        previous = comp.get("previousRolledoutRevision")
        if rolled is not None and rolled not in by_number:
            rolled = None  # its server is gone (deleted by hand): start over from latest
        latest_w = by_number.get(latest) if latest is not None else None
        latest_ready = bool(latest_w and latest_w.ready)
        pct = predictor.get("canaryTrafficPercent")
        if latest is not None and latest_ready:
            if rolled is None:
                rolled = latest
            elif rolled != latest and (pct is None or pct == 100):
                previous, rolled = revision_name(name, rolled), latest
        keep = {n for n in (latest, rolled) if n is not None}
        await self._delete_workloads([w for n, w in by_number.items() if n not in keep])
        by_number = {n: w for n, w in by_number.items() if n in keep}

        if latest_w is not None and failure is None:
            failure = await self._failure_of(latest_w)
        settled = (
            failure is None
            and pending is None
            and all(w.ready for w in by_number.values())
            and latest is not None
            and rolled is not None
            and (latest == rolled or pct not in (None, 100))
        )
        scale_down = idle and settled and latest == rolled
        active = desired_replicas(predictor, self.window.observed(namespace, name))
        replicas = 0 if scale_down else active
        scale = self._scale_replicas
        secondaries = await scale(isvc, digest, keep, by_number, secondaries, replicas)
        if scale_down and await self._drained(namespace, name, comp, [*by_number.values()]):
            by_number = {}
        elif not scale_down:
            self._draining.pop((namespace, name), None)
        settled = settled and all(w.ready for (_, r), w in secondaries.items() if r < replicas)
        self._note_scaling(namespace, name, "predictor", predictor, active)
        # A scale-to-zero service that served before keeps its traffic and Ready condition
        # while it is stopped or starting again; only a failure makes it not Ready.
        standby = (
            scales_to_zero
            and failure is None
            and rolled is not None
            and comp.get("latestRolledoutRevision") == revision_name(name, rolled)
            and bool(comp.get("traffic"))
        )
        new_status = isvc_status.build_status(
            self.gateway_url,
            isvc,
            status,
            latest,
            rolled,
            previous,
            by_number,
            pct,
            failure,
            desired=replicas,
            standby=standby,
            secondaries=secondaries,
            pending=pending,
            failure_reason=reason,
        )
        new_status, settled = await self._components(isvc, status, new_status, parts, settled)
        if new_status != status:
            await self.store.update_status(INFERENCE_SERVICE, namespace, name, new_status)
        if settled and not comp.get("actualReplicas") and by_number:
            self.clock.touch(namespace, name)  # just became ready: the grace starts now
        self._poll_again(namespace, name, settled, failure is not None)
        if settled and scales_to_zero and not scale_down:
            self._check_idle_later(namespace, name)

    async def _components(
        self,
        isvc: dict[str, Any],
        old: dict[str, Any],
        status: dict[str, Any],
        parts: list[WorkloadStatus],
        settled: bool,
    ) -> tuple[dict[str, Any], bool]:
        """The transformer and explainer (services.serving.components) brought to the spec:
        the status with them, and whether everything has settled."""
        predictor = (status.get("components") or {}).get("predictor") or {}
        key = (isvc["metadata"]["namespace"], isvc["metadata"]["name"])
        scaling = Scaling(self.window.observed(*key), self._surplus, self.drain_seconds)
        found = await reconcile_components(
            self.runtime,
            self.gateway_url,
            isvc,
            parts,
            predictor.get("endpoint"),
            {**self.labels, ISVC_LABEL: key[1]},
            _owner(isvc),
            scaling,
        )
        transformer = isvc["spec"].get("transformer") or {}
        decided = desired_replicas(transformer, scaling.load) if transformer else 1
        self._note_scaling(*key, "transformer", transformer, decided)
        if scaling.again_in is not None:
            self._enqueue_later(scaling.again_in + 0.05, *key)
        ready = components_ready(found)
        return with_components(status, old, isvc, self.gateway_url, found), settled and ready

    @staticmethod
    def _scaled_to_zero(isvc: dict[str, Any], comp: dict[str, Any]) -> bool:
        """Stopped for idleness, with the spec unchanged since (else it is a new revision)."""
        status = isvc.get("status") or {}
        return (
            comp.get("desiredReplicas") == 0
            and bool(comp.get("latestRolledoutRevision"))
            and status.get("observedGeneration") == isvc["metadata"].get("generation")
        )

    async def _activate(
        self,
        isvc: dict[str, Any],
        comp: dict[str, Any],
        by_number: dict[int, WorkloadStatus],
        digest: str,
    ) -> None:
        """Start the rolled-out revision of a scaled-to-zero service again, same number."""
        meta = isvc["metadata"]
        number = revision_number(comp.get("latestRolledoutRevision"))
        try:
            spec = await self.workload_for(isvc, number, digest)
        except (StorageError, ValueError):
            return  # reconcile creates the revision anew and reports why it cannot
        by_number[number] = await self.runtime.apply(spec)
        self.clock.touch(meta["namespace"], meta["name"])
        log.info("activating %s/%s revision %s", meta["namespace"], meta["name"], number)

    async def _scale_replicas(
        self,
        isvc: dict[str, Any],
        digest: str,
        keep: set[int],
        by_number: dict[int, WorkloadStatus],
        secondaries: dict[tuple[int, int], WorkloadStatus],
        replicas: int,
    ) -> dict[tuple[int, int], WorkloadStatus]:
        """Replicas 1..replicas-1 of each kept revision; the rest drained, then deleted.

        Only a revision of the current spec gains replicas (an older one's spec is not kept).
        """
        now = time.monotonic()
        for (number, replica), w in list(secondaries.items()):
            if number not in keep or w.finished:
                await self.runtime.delete(w.namespace, w.name)
                del secondaries[(number, replica)]
            elif replica >= replicas:
                since = self._surplus.setdefault(w.name, now)
                if now - since >= self.drain_seconds:
                    await self.runtime.delete(w.namespace, w.name)
                    del secondaries[(number, replica)]
                    self._surplus.pop(w.name, None)
                    log.info("scaled in: deleted replica %s/%s", w.namespace, w.name)
                else:
                    meta = isvc["metadata"]
                    left = self.drain_seconds - (now - since) + 0.05
                    self._enqueue_later(left, meta["namespace"], meta["name"])
            else:
                self._surplus.pop(w.name, None)
        for number in keep:
            primary = by_number.get(number)
            if primary is None or primary.labels.get(HASH_LABEL) != digest:
                continue
            for replica in range(1, replicas):
                if (number, replica) in secondaries:
                    continue
                try:
                    spec = await self.workload_for(isvc, number, digest, replica)
                except (StorageError, ValueError):
                    break  # replica 0 reports why
                secondaries[(number, replica)] = await self.runtime.apply(spec)
                log.info("scaled out: started replica %s/%s", spec.namespace, spec.name)
        return secondaries

    async def _drained(
        self,
        namespace: str,
        name: str,
        comp: dict[str, Any],
        workloads: list[WorkloadStatus],
    ) -> bool:
        """Delete an idle service's servers once its endpoint has been withdrawn a while."""
        key = (namespace, name)
        since = self._draining.setdefault(key, time.monotonic())
        waited = time.monotonic() - since
        if comp.get("desiredReplicas") != 0 or waited < self.drain_seconds:
            self._enqueue_later(max(self.drain_seconds - waited, 0.0) + 0.05, namespace, name)
            return False
        await self._delete_workloads(workloads)
        self._draining.pop(key, None)
        log.info(
            "scaled %s/%s to zero after %.0f s without requests",
            namespace,
            name,
            self.scale_to_zero_seconds,
        )
        return True

    def _note_scaling(
        self, namespace: str, name: str, part: str, spec: dict[str, Any], active: int
    ) -> None:
        """Remember an autoscaled part of a service (the predictor or the transformer): its
        spec and the replicas last decided."""
        low, high = replica_bounds(spec)
        parts = self._scaling.setdefault((namespace, name), {})
        if high <= low:
            parts.pop(part, None)
        else:
            parts[part] = (spec, active)
            if active > low:  # look again once the window has forgotten this load
                self._enqueue_later(self.window.seconds + 0.1, namespace, name)
        if not parts:
            del self._scaling[(namespace, name)]

    def _check_idle_later(self, namespace: str, name: str) -> None:
        """Reconcile again when the service would have been idle long enough to stop."""
        left = self.scale_to_zero_seconds - self.clock.idle_for(namespace, name)
        self._enqueue_later(max(left, 0.0) + 0.05, namespace, name)

    def _enqueue_later(self, delay: float, namespace: str, name: str) -> None:
        asyncio.get_running_loop().call_later(
            delay, self.enqueue, INFERENCE_SERVICE, namespace, name
        )

    def _poll_again(self, namespace: str, name: str, settled: bool, failed: bool) -> None:
        key = (namespace, name)
        if settled:
            self._polls.forget(key)
            return
        delay = self._polls.next(key, failed)
        asyncio.get_running_loop().call_later(
            delay, self.enqueue, INFERENCE_SERVICE, namespace, name
        )

    async def _restart_stopped(
        self, isvc: dict[str, Any], by_number: dict[int, WorkloadStatus], digest: str
    ) -> None:
        """Start again the servers an orderly service stop ended (workloads stay listed).

        The current revision comes back under its own number. An older revision's spec is
        not kept, so it is dropped and traffic moves to the current one.
        """
        for number, w in list(by_number.items()):
            if not w.finished or w.reason in LAUNCH_ERRORS:
                continue
            await self.runtime.delete(w.namespace, w.name)
            del by_number[number]
            if w.labels.get(HASH_LABEL) == digest:
                try:
                    spec = await self.workload_for(isvc, number, digest)
                except (StorageError, ValueError):
                    continue  # reconcile creates the revision anew and reports why it cannot
                by_number[number] = await self.runtime.apply(spec)
                log.info("restarted stopped model server %s/%s", w.namespace, w.name)

    async def _relaunch_if_claim_appeared(self, workload: WorkloadStatus) -> bool:
        """A revision that failed for a missing claim is started again once the claim exists."""
        if workload.phase != Phase.FAILED or workload.reason != "PersistentVolumeClaimNotFound":
            return False
        message = workload.message or ""
        claim = message.removeprefix("PersistentVolumeClaim ").split(" ", 1)[0]
        if not claim or not await self.runtime.volume_exists(workload.namespace, claim):
            return False
        await self.runtime.delete(workload.namespace, workload.name)
        self.enqueue(INFERENCE_SERVICE, workload.namespace, workload.labels[ISVC_LABEL])
        return True

    async def _failure_of(self, workload: WorkloadStatus) -> str | None:
        """Why a revision cannot become ready (None while it may still)."""
        if workload.ready:
            return None
        crashed = (
            workload.phase == Phase.FAILED
            or workload.restart_count > 0
            or (workload.reason in ("CrashLoopBackOff", "Error"))
        )
        if not crashed:
            return None
        detail = workload.message or workload.reason or "the model server exited"
        try:
            lines = [
                line async for line in self.runtime.logs(workload.namespace, workload.name, tail=20)
            ]
        except Exception:
            lines = []
        errors = [line for line in lines if " ERROR " in line or "Error" in line]
        return f"{detail}: {errors[-1]}" if errors else detail

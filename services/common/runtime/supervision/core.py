"""The supervisor's loop: one workload's runs, restarts, readiness probes and state file.

See services/common/runtime/supervisor.py (the entry point) for what the supervisor
promises and why this package is standard library only.
"""

# Start-up time is most of this process's cost: ``json`` and ``signal`` would pull in ``re``
# and ``enum`` (about 10 ms), so the C modules behind them are used directly.
import _signal as signal
import os
import select
import sys
import time

from .cgroups import cgroup_oom_kills, cgroup_prepare, cgroup_remove, write_file
from .group import GroupNetwork, without_new_network
from .jsonio import dumps, loads
from .launch import SandboxError, build_sandbox_argv, read_child_pid, set_rlimits
from .network import WorkloadNetwork
from .procs import kill_tree, killpg, proc_start_time, take_lock
from .volumes import human_bytes, over_size

STATE = "state.json"
LAUNCH = "launch.json"
LOCK = "lock"
LOG_TAIL_BYTES = 600
# Restart back-off is reset once a run lasted this long, as Kubernetes does for containers.
BACKOFF_RESET_AFTER = 60.0


class Supervisor:
    """One workload's whole life: its runs, restarts, probes and final state."""

    def __init__(self, workdir: str, launch: dict) -> None:
        self.dir = workdir
        self.launch = launch
        self.state: dict = {
            "supervisorPid": os.getpid(),
            "phase": "Pending",
            "restartCount": 0,
            "port": launch.get("port"),
            "ready": False,
        }
        self.stop_requested = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)
        signal.set_wakeup_fd(self.wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_stop)
        self.deadline_at: float | None = None
        self.evicted: str | None = None  # why the workload was stopped for a full volume
        self.net = WorkloadNetwork(launch)

    # -- bookkeeping -------------------------------------------------------------------------

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stop_requested = True

    def write_state(self, **changes: object) -> None:
        self.state.update(changes)
        tmp = os.path.join(self.dir, ".state.json.tmp")
        with open(tmp, "w") as f:
            f.write(dumps(self.state))
        os.replace(tmp, os.path.join(self.dir, STATE))

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except OSError:
            pass

    def _log_tail(self) -> str:
        try:
            with open(self.launch["log"], "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - LOG_TAIL_BYTES))
                data = f.read().decode(errors="replace")
        except OSError:
            return ""
        lines = [ln for ln in data.splitlines() if ln.strip()][-3:]
        return " | ".join(lines)

    # -- the workload process ------------------------------------------------------------------

    def spawn(self, step: dict | None = None) -> int:
        """Start the workload (or its init ``step``) in its sandbox; return bubblewrap's pid.

        bubblewrap builds the namespaces, reports its child's pid (``--info-fd``) and waits
        (``--block-fd``) while the network agent makes the egress sockets inside; only then
        does it run the workload, so the platform API answers from the first instruction.
        """
        launch = self.launch
        box = launch.get("sandbox")
        if not box:
            raise SandboxError("no sandbox in the launch plan; nothing runs unsandboxed")
        procs = cgroup_prepare(launch.get("cgroup"))
        group = GroupNetwork(box.get("network"))
        try:
            argv, keep, data = build_sandbox_argv(box, (step or launch)["argv"])
            joined = group.find()  # a live member's network (local_network.py), or None
        except BaseException:
            group.release()
            raise
        if joined is not None and os.geteuid() != 0:
            group.release()
            raise SandboxError(
                "joining a workload network needs the platform to run as root "
                "(services/common/runtime/local_network.py)"
            )
        if joined is not None:
            import netns

            argv = without_new_network(argv)
        info_r, info_w = os.pipe()
        block_r, block_w = os.pipe()
        keep += [info_w, block_r]
        argv[1:1] = ["--info-fd", str(info_w), "--block-fd", str(block_r)]
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        log_fd = os.open(launch["log"], flags, 0o644)
        try:
            pid = os.fork()
            if pid == 0:  # child: never return into the supervisor's code
                try:
                    os.setsid()
                    for sig in (
                        signal.SIGPIPE,
                        signal.SIGXFSZ,
                        signal.SIGTERM,
                        signal.SIGINT,
                        signal.SIGHUP,
                    ):
                        signal.signal(sig, signal.SIG_DFL)
                    signal.set_wakeup_fd(-1)
                    set_rlimits(launch)
                    for path in procs:  # everything the workload starts stays inside
                        write_file(path, str(os.getpid()))
                    null = os.open(os.devnull, os.O_RDONLY)
                    os.dup2(null, 0)
                    os.dup2(log_fd, 1)
                    os.dup2(log_fd, 2)
                    for fd in keep:
                        os.set_inheritable(fd, True)
                    os.chdir(launch["cwd"])
                    if joined is not None:
                        netns.join(joined)
                    os.execve(argv[0], argv, (step or launch)["env"])
                except BaseException as exc:  # noqa: BLE001 - report anything, then leave
                    try:
                        os.write(2, f"failed to start the sandbox: {exc}\n".encode())
                    finally:
                        os._exit(127)
        finally:
            os.close(log_fd)
            for fd in keep:
                os.close(fd)
        try:
            for fd, payload in data:
                with open(fd, "wb", closefd=True) as pipe:
                    pipe.write(payload)
            self.net.prepare()  # loads ctypes while bubblewrap sets up
            child = read_child_pid(info_r)
            group.record(child)
            self.net.attach(child, box)
            os.write(block_w, b"x")
        except Exception as exc:
            group.release()
            killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise SandboxError(f"could not set up the workload's network: {exc}") from None
        finally:
            os.close(info_r)
            os.close(block_w)
        return pid

    # -- one run -----------------------------------------------------------------------------

    def run_once(self, step: dict | None = None) -> tuple[str, int]:
        """Start the workload (or its init ``step``) and watch it; return (outcome, status).

        An init step runs as the workload would (same sandbox, mounts, network and limits),
        while the workload is still Pending, and is never probed."""
        pid = self.spawn(step)
        now = time.time()
        # The first run starts the workload's clock (startTime, the active deadline); a
        # restart only its own (runStartTime).
        first_run: dict[str, object] = {}
        if self.state.get("startTime") is None:
            deadline = self.launch.get("activeDeadlineSeconds")
            self.deadline_at = time.monotonic() + float(deadline) if deadline else None
            first_run["startTime"] = now
        self.write_state(
            phase="Running" if step is None else "Pending",
            pid=pid,
            pidStart=proc_start_time(pid),
            **first_run,
            runStartTime=now,
            reason=None if step is None else "PodInitializing",
            message=None if step is None else f"init step {step['name']!r} is running",
            ready=False,
        )
        pidfd = os.pidfd_open(pid)
        is_server = self.launch.get("kind") == "server" and step is None
        probe = self.launch.get("probe") or {}
        next_probe = time.monotonic() + float(probe.get("initialDelay", 0)) if is_server else None
        probe_gap = 0.02
        failures = 0
        grace = float(self.launch.get("grace", 5))
        check_every = float(self.launch.get("volumeCheckSeconds") or 1.0)
        next_usage = time.monotonic() if self.launch.get("volumeLimits") else None
        try:
            while True:
                if self.stop_requested:
                    return "stopped", kill_tree(pid, pidfd, grace)
                now_m = time.monotonic()
                if self.deadline_at is not None and now_m >= self.deadline_at:
                    return "deadline", kill_tree(pid, pidfd, grace)
                if next_usage is not None and now_m >= next_usage:
                    self.evicted = over_size(self.launch["volumeLimits"])
                    if self.evicted:  # no grace: every second may write more
                        return "volume-full", kill_tree(pid, pidfd, 0)
                    next_usage = time.monotonic() + check_every
                if next_probe is not None and now_m >= next_probe:
                    ok = self.net.probe()
                    if ok and not self.state["ready"]:
                        self.write_state(ready=True)
                    if not ok and self.state["ready"]:
                        failures += 1
                        if failures >= int(probe.get("failureThreshold", 3)):
                            self.write_state(ready=False)
                    if ok:
                        failures = 0
                    if self.state["ready"]:
                        probe_gap = float(probe.get("period", 10))
                    else:  # not ready yet: probe fast (a refused loopback connect is cheap),
                        # backing off to 0.1 s: every probe gap is added to a server's start
                        probe_gap = min(probe_gap * 1.5, 0.1)
                    next_probe = time.monotonic() + probe_gap
                waits = [t for t in (self.deadline_at, next_probe, next_usage) if t is not None]
                timeout = max(0.0, min(waits) - time.monotonic()) if waits else None
                watched = [pidfd, self.wake_r, *self.net.watched()]
                ready, _, _ = select.select(watched, [], [], timeout)
                if self.wake_r in ready:
                    self._drain_wakeups()
                self.net.serve(ready, self.state.get("phase") == "Running")
                if pidfd in ready:
                    _, status = os.waitpid(pid, 0)
                    killpg(pid, signal.SIGKILL)  # orphans left in the group die with it
                    return "exited", status
        finally:
            os.close(pidfd)
            self.net.close()

    # -- the whole life ----------------------------------------------------------------------

    def _ended(self, outcome: str, code: int) -> bool:
        """Finish the workload if a run's ``outcome`` ends it whatever its exit code (its
        deadline passed, a claim over its size, a stop); True if it did."""
        if outcome == "deadline":
            secs = self.launch.get("activeDeadlineSeconds")
            self.finish(
                "Failed",
                code,
                "DeadlineExceeded",
                f"workload was active longer than its deadline "
                f"(activeDeadlineSeconds={secs:g}) and was killed",
            )
            return True
        if outcome == "exited" and self.launch.get("volumeLimits"):
            # Writes between two checks are not stopped: a workload that filled a claim
            # past its size and left at once has still failed.
            self.evicted = over_size(self.launch["volumeLimits"])
            outcome = "volume-full" if self.evicted else outcome
        if outcome == "volume-full":
            self.finish("Failed", code, "Evicted", self.evicted)
            return True
        if outcome == "stopped":
            self.finish(
                "Failed", code, "Stopped", "stopped by the runtime (delete or orderly shutdown)"
            )
            return True
        return False

    def _may_retry(self) -> bool:
        """Whether a failed run is tried again (restartPolicy, a job's backoffLimit)."""
        if self.launch.get("restartPolicy", "Never") == "Never":
            return False
        limit = self.launch.get("backoffLimit")
        if self.launch.get("kind", "job") == "job" and limit is not None:
            return self.state["restartCount"] < int(limit)
        return True

    def _backoff(self, failures_in_a_row: int) -> float:
        base = float(self.launch.get("backoffBase", 1.0))
        cap = float(self.launch.get("backoffMax", 300.0))
        return min(cap, base * (2**failures_in_a_row))

    def initialize(self) -> bool:
        """Run the init steps in order, each to success, before the workload's command (as
        the kubelet runs a pod's init containers); False if the workload ended meanwhile.

        A step that fails ends the workload (``InitError``, with its last output) unless its
        restartPolicy retries, with back-off (``InitCrashLoopBackOff`` while it waits)."""
        steps = self.launch.get("init") or []
        index, failures_in_a_row = 0, 0
        while index < len(steps):
            step = steps[index]
            try:
                outcome, status = self.run_once(step)
            except SandboxError as exc:
                self.finish("Failed", 1, exc.reason, str(exc))
                return False
            code = _exit_code(status)
            if self._ended(outcome, code):
                return False
            if code == 0:
                index, failures_in_a_row = index + 1, 0
                continue
            tail = self._log_tail()
            msg = f"init step {step['name']!r} exited with code {code}"
            msg += f"; last output: {tail}" if tail else ""
            if not self._may_retry():
                self.finish("Failed", code, "InitError", msg)
                return False
            delay = self._backoff(failures_in_a_row)
            failures_in_a_row += 1
            self.write_state(
                phase="Pending",
                pid=None,
                lastExitCode=code,
                reason="InitCrashLoopBackOff",
                message=f"back-off {delay:g}s restarting: {msg}",
                restartCount=self.state["restartCount"] + 1,
            )
            if self._sleep_interruptibly(delay):
                self.finish(
                    "Failed", code, "Stopped", "stopped by the runtime (delete or orderly shutdown)"
                )
                return False
        return True

    def run(self) -> None:
        self.write_state()
        if not self.initialize():
            return
        policy = self.launch.get("restartPolicy", "Never")
        failures_in_a_row = 0
        while True:
            run_started = time.monotonic()
            try:
                outcome, status = self.run_once()
            except SandboxError as exc:
                return self.finish("Failed", 1, exc.reason, str(exc))
            code = _exit_code(status)
            if self._ended(outcome, code):
                return None
            restart = policy == "Always" or (policy == "OnFailure" and code != 0)
            restart = restart and self._may_retry()
            if not restart:
                if code == 0:
                    return self.finish("Succeeded", 0, "Completed", None)
                tail = self._log_tail()
                msg = f"command exited with code {code}"
                msg += f"; last output: {tail}" if tail else ""
                reason = "BackoffLimitExceeded" if policy == "OnFailure" else "Error"
                if code == 128 + signal.SIGXFSZ and self.launch.get("rlimitFsize"):
                    # As the kubelet evicts a pod over its ephemeral-storage limit.
                    reason = "Evicted"
                    limit = human_bytes(int(self.launch["rlimitFsize"]))
                    msg = (
                        f"File too large: a file reached resources.limits.ephemeral-storage "
                        f"({limit}, enforced per file) and the writer was killed; " + msg
                    )
                if code == 137 and cgroup_oom_kills(self.launch.get("cgroup")):
                    reason = "OOMKilled"
                    msg = "the workload used more memory than resources.limits.memory; " + msg
                return self.finish("Failed", code, reason, msg)
            if time.monotonic() - run_started >= BACKOFF_RESET_AFTER:
                failures_in_a_row = 0
            delay = self._backoff(failures_in_a_row)
            failures_in_a_row += 1
            self.write_state(
                phase="Running",
                ready=False,
                pid=None,
                lastExitCode=code,
                reason="CrashLoopBackOff",
                message=f"back-off {delay:g}s restarting a workload that exited with code {code}",
                restartCount=self.state["restartCount"] + 1,
            )
            if self._sleep_interruptibly(delay):
                return self.finish(
                    "Failed", code, "Stopped", "stopped by the runtime (delete or orderly shutdown)"
                )

    def _sleep_interruptibly(self, delay: float) -> bool:
        """Sleep; return True if a stop was requested (or the deadline passed) meanwhile."""
        end = time.monotonic() + delay
        while not self.stop_requested:
            left = end - time.monotonic()
            if self.deadline_at is not None:
                left = min(left, self.deadline_at - time.monotonic())
            if left <= 0:
                break
            ready, _, _ = select.select([self.wake_r], [], [], left)
            if ready:
                self._drain_wakeups()
        deadline_passed = self.deadline_at is not None and time.monotonic() >= self.deadline_at
        return self.stop_requested or deadline_passed

    def finish(self, phase: str, code: int, reason: str, message: str | None) -> None:
        self.write_state(
            phase=phase,
            exitCode=code,
            finishTime=time.time(),
            reason=reason,
            message=message,
            ready=False,
            pid=None,
        )
        # After the state: the workload's last processes may take a moment to leave their
        # cgroup, and no one should wait for that to learn that the workload has ended.
        cgroup_remove(self.launch.get("cgroup"))


def _exit_code(status: int) -> int:
    """A wait status as a container's exit code (a signal N reported as 128 + N)."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def main(argv: list[str]) -> int:
    """Run the workload in ``argv[1]`` once, to its end; the exit code is the supervisor's."""
    if len(argv) != 2:
        sys.stderr.write("usage: supervisor.py <workload-dir>\n")
        return 2
    workdir = argv[1]
    lock_fd = take_lock(os.path.join(workdir, LOCK))
    if lock_fd is None:
        sys.stderr.write("another supervisor owns this workload\n")
        return 0
    if os.path.exists(os.path.join(workdir, STATE)):
        sys.stderr.write("workload already started once; not starting it again\n")
        return 0
    with open(os.path.join(workdir, LAUNCH)) as f:
        launch = loads(f.read())
    if not isinstance(launch, dict):
        sys.stderr.write("launch.json: not a JSON object\n")
        return 2
    Supervisor(workdir, launch).run()
    return 0

"""The per-workload supervisor: ``python -I -S supervisor.py <workload-dir>``.

One supervisor runs per workload, in its own session, so it outlives the service that
started it (even a SIGKILL of that service). It reads ``launch.json`` (the argv, environment,
limits and probe the runtime resolved), starts the workload, and records every transition in
``state.json`` with an atomic rename, so any later runtime reads the truth from disk: start
time and pid, readiness, restarts, and the final exit code.

Exactly once: the supervisor holds an exclusive ``flock`` on ``<dir>/lock`` while alive (the
runtime's liveness test), and refuses to run when ``state.json`` already exists (an earlier
supervisor took the workload, whatever happened to it afterwards).

Lean on purpose, because it starts once per Trial and pipeline step: standard library only,
no polling: it sleeps in ``select`` on a pidfd of the workload and on a signal wake-up pipe.

Where its code lives, and why it may load it. The supervisor is the trusted process closest to
the workload, so it runs isolated (``-I``: no ``PYTHON*`` variables, no user site, no script
directory on ``sys.path``; ``-S``: no ``site``, so no installed packages or ``.pth`` hooks) and
never imports the ``services`` package: no platform code, no settings read from the
environment. Its code is this file plus the ``supervision`` package beside it (one module per
seam: ``launch`` builds bubblewrap's argv and mounts, ``cgroups``, ``network`` the egress
relays, probes and endpoint, ``volumes`` the claims' sizes, ``procs``, ``jsonio``, and ``core``
the run/probe/restart loop) and ``netns.py``. All of them are standard library only, and their
imports are relative or plain stdlib, never ``services``. Run by path, this file appends its
own directory to ``sys.path``: an absolute path taken from ``__file__`` (which the runtime
passes as an absolute, platform-owned path), never from the environment, and appended, so the
standard library is always found first and no module there can be shadowed. Only the modules
named (``supervision``, ``netns``) are loaded from it. A zipapp would give the same isolation,
but it would be a build artefact to keep in step with the source (a stale one would run old
code without a sign), and zipimport costs start-up time the supervisor does not have.

Imported by the platform (``services.common.runtime.supervisor``), this module only re-exports
what the runtime and its tests use from the supervisor's side.
"""

if __name__ == "__main__":
    import os
    import sys

    sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    from supervision.core import main

    sys.exit(main(sys.argv))
else:
    from .supervision.cgroups import cgroup_remove
    from .supervision.core import LAUNCH, LOCK, STATE, Supervisor, main
    from .supervision.launch import SandboxError, build_sandbox_argv, open_beneath
    from .supervision.procs import proc_start_time

    __all__ = [
        "LAUNCH",
        "LOCK",
        "STATE",
        "SandboxError",
        "Supervisor",
        "build_sandbox_argv",
        "cgroup_remove",
        "main",
        "open_beneath",
        "proc_start_time",
    ]

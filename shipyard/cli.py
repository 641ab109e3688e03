"""The ``shipyard`` command: run the platform and manage its objects through the gateway."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from services.common import safe_yaml
from shipyard import kinds, output
from shipyard.client import ApiError, Client
from shipyard.config import ClientSettings

_MANAGED_META = ("labels", "annotations")


def _err(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")


def _explain(exc: ApiError) -> str:
    causes = exc.status.get("details", {}).get("causes") or []
    lines = [str(exc)]
    lines += [f"  {c.get('field', '')}: {c.get('message', '')}" for c in causes if len(causes) > 1]
    if exc.code == 401:
        lines.append("  (run `shipyard login`, or set SHIPYARD_TOKEN)")
    return "\n".join(lines)


def read_documents(source: str, stdin: TextIO = sys.stdin) -> Iterator[dict[str, Any]]:
    """The objects in a file (or ``-``): multi-document YAML or JSON, ``List`` kinds flattened."""
    text = stdin.read() if source == "-" else Path(source).read_text()
    for doc in safe_yaml.load_all(text):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ValueError(
                f"{source}: every document must be a mapping, got {type(doc).__name__}"
            )
        if doc.get("kind") == "List" or str(doc.get("kind", "")).endswith("List"):
            yield from doc.get("items", [])
        else:
            yield doc


def _desired_unchanged(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    meta, cur_meta = desired.get("metadata", {}), current.get("metadata", {})
    if any(meta.get(k) and meta.get(k) != cur_meta.get(k) for k in _MANAGED_META):
        return False
    return all(
        current.get(k) == v
        for k, v in desired.items()
        if k not in ("metadata", "status", "apiVersion", "kind")
    )


def apply_object(client: Client, obj: dict[str, Any], default_ns: str) -> str:
    """Create or update one object; returns ``kind/name created|configured|unchanged``."""
    kind = kinds.for_object(obj.get("apiVersion"), obj.get("kind"))
    meta = obj.setdefault("metadata", {})
    namespace = (meta.get("namespace") or default_ns) if kind.namespaced else None
    if kind.namespaced:
        meta["namespace"] = namespace
    label = f"{kind.singular}.{kind.group}" if kind.group else kind.singular
    name = meta.get("name")
    if not name:
        created = client.create(kind, namespace, obj)
        return f"{label}/{created['metadata']['name']} created"
    try:
        current = client.get(kind, namespace, name)
    except ApiError as exc:
        if exc.code != 404:
            raise
        client.create(kind, namespace, obj)
        return f"{label}/{name} created"
    if _desired_unchanged(current, obj):
        return f"{label}/{name} unchanged"
    meta["resourceVersion"] = current["metadata"]["resourceVersion"]
    client.replace(kind, namespace, name, obj)
    return f"{label}/{name} configured"


class _Unreadable(Exception):
    """A ``-f`` file could not be read; the reason has been said already."""


def _objects_in(sources: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object in the files (or stdin, ``-``) with its file, a file read whole before its
    objects come; _Unreadable, with the reason said, at the first file that cannot be read."""
    for source in sources:
        try:
            docs = list(read_documents(source))
        except (OSError, ValueError, yaml.YAMLError) as exc:
            _err(f"cannot read {source}: {exc}")
            raise _Unreadable(source) from exc
        for obj in docs:
            yield source, obj


def cmd_apply(args: argparse.Namespace, client: Client) -> int:
    failures = 0
    try:
        for _source, obj in _objects_in(args.filename):
            try:
                sys.stdout.write(apply_object(client, obj, args.namespace) + "\n")
            except (ApiError, kinds.UnknownKindError) as exc:
                failures += 1
                text = _explain(exc) if isinstance(exc, ApiError) else str(exc)
                name = obj.get("metadata", {}).get("name") or obj.get("metadata", {}).get(
                    "generateName", ""
                )
                _err(f"{obj.get('kind', '?')}/{name}: {text}")
    except _Unreadable:
        return 1
    return 1 if failures else 0


def cmd_get(args: argparse.Namespace, client: Client) -> int:
    kind = kinds.resolve(args.kind)
    namespace = None if args.all_namespaces or not kind.namespaced else args.namespace
    if args.watch:
        return _watch(args, client, kind, namespace)
    if args.name:
        items = [client.get(kind, namespace, args.name)]
    else:
        items = client.list(kind, namespace, args.selector)
    if args.output in ("yaml", "json"):
        if items:
            output.write_documents(items, args.output, as_list=not args.name)
        return 0
    if not items:
        where = "" if namespace is None else f" in {namespace} namespace"
        sys.stderr.write(f"No resources found{where}.\n")
        return 0
    output.write_table(
        output.table(
            kind,
            items,
            wide=args.output == "wide",
            all_namespaces=namespace is None and kind.namespaced,
        )
    )
    return 0


def _watch(args: argparse.Namespace, client: Client, kind: Any, namespace: str | None) -> int:
    header_done = False
    for event in client.watch(kind, namespace, args.selector):
        obj = event.get("object", {})
        if event.get("type") == "ERROR":
            _err(obj.get("message", "watch failed"))
            return 1
        if args.name and obj.get("metadata", {}).get("name") != args.name:
            continue
        rows = output.table(kind, [obj], wide=args.output == "wide")
        if header_done:
            rows = rows[1:]
        header_done = True
        output.write_table(rows)
        sys.stdout.flush()
    return 0


def cmd_delete(args: argparse.Namespace, client: Client) -> int:
    """``delete KIND NAME...`` or, as kubectl, ``delete -f FILE...`` (every object in the
    files, by its kind, namespace and name)."""
    targets: list[tuple[kinds.KindInfo, str | None, str]] = []
    if args.filename:
        if args.kind or args.names:
            _err("give either -f FILE or KIND NAME..., not both")
            return 1
        try:
            for source, obj in _objects_in(args.filename):
                try:
                    kind = kinds.for_object(obj.get("apiVersion"), obj.get("kind"))
                except kinds.UnknownKindError as exc:
                    _err(str(exc))
                    return 1
                meta = obj.get("metadata") or {}
                if not meta.get("name"):
                    _err(f"{source}: a {kind.kind} without metadata.name cannot be deleted by file")
                    return 1
                namespace = (meta.get("namespace") or args.namespace) if kind.namespaced else None
                targets.append((kind, namespace, meta["name"]))
        except _Unreadable:
            return 1
    elif args.kind and args.names:
        kind = kinds.resolve(args.kind)
        namespace = args.namespace if kind.namespaced else None
        targets = [(kind, namespace, name) for name in args.names]
    else:
        _err("say what to delete: KIND NAME... or -f FILE")
        return 1
    status = 0
    for kind, namespace, name in targets:
        try:
            client.delete(kind, namespace, name)
            label = f"{kind.singular}.{kind.group}" if kind.group else kind.singular
            sys.stdout.write(f'{label} "{name}" deleted\n')
        except ApiError as exc:
            _err(_explain(exc))
            status = 1
    return status


def cmd_migrate(args: argparse.Namespace, client: Client | None) -> int:
    from shipyard.migrate import SERVICES, downgrade, migrate_all

    def progress(line: str) -> None:
        sys.stdout.write(line + "\n")

    targets: dict[str, str] = {}
    for item in getattr(args, "downgrade", []):
        service, _, revision = item.partition("=")
        if service not in SERVICES or not revision:
            _err(f"--downgrade {item}: expected SERVICE=REVISION, SERVICE one of {SERVICES}")
            return 2
        targets[service] = revision
    if targets:
        asyncio.run(downgrade(targets, progress=progress))
    else:
        asyncio.run(migrate_all(progress=progress))
    return 0


def build_parser() -> argparse.ArgumentParser:
    settings = ClientSettings()
    parser = argparse.ArgumentParser(prog="shipyard", description=__doc__)
    parser.add_argument(
        "--server", default=settings.url, help="gateway URL (default %(default)s, or SHIPYARD_URL)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def namespaced(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-n",
            "--namespace",
            default=settings.namespace,
            help="namespace (default %(default)s, or SHIPYARD_NAMESPACE)",
        )

    from shipyard import up

    p = sub.add_parser("up", help="run the whole platform on this machine")
    up.add_arguments(p)

    p = sub.add_parser("apply", help="create or update objects from YAML/JSON files")
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        help="file to apply, or - for stdin (repeatable)",
    )
    namespaced(p)

    p = sub.add_parser("get", help="list objects, or show one")
    p.add_argument(
        "kind",
        help="kind, plural or short name: "
        + ", ".join(
            sorted({k.short_names[0] if k.short_names else k.plural for k in kinds.ALL_KINDS})
        ),
    )
    p.add_argument("name", nargs="?")
    p.add_argument("-o", "--output", choices=("table", "wide", "yaml", "json"), default="table")
    p.add_argument("-l", "--selector", help="label selector, e.g. experiment=random-example")
    p.add_argument("-w", "--watch", action="store_true", help="keep printing changes")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    namespaced(p)

    p = sub.add_parser("delete", help="delete objects: KIND NAME... or -f FILE...")
    p.add_argument("kind", nargs="?")
    p.add_argument("names", nargs="*")
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        help="delete the objects in this file, or - for stdin (repeatable)",
    )
    namespaced(p)

    p = sub.add_parser("migrate", help="run every service's database migrations")
    p.add_argument(
        "--downgrade",
        action="append",
        default=[],
        metavar="SERVICE=REVISION",
        help="take SERVICE's schema back down to REVISION (before running an older release; "
        "see docs/operations.md); repeatable. Without it: every schema up to head",
    )

    try:
        from shipyard import logs
    except ImportError:
        logs = None  # type: ignore[assignment]
    if logs is not None:
        p = sub.add_parser("logs", help="print the logs of what an object runs")
        logs.add_arguments(p)
        namespaced(p)
    try:
        from shipyard import auth
    except ImportError:
        auth = None  # type: ignore[assignment]
    if auth is not None and hasattr(auth, "add_login_arguments"):
        auth.add_login_arguments(sub.add_parser("login", help="log in to the gateway (OIDC)"))
        sub.add_parser("logout", help="forget the stored credentials")
        auth.add_kubeconfig_arguments(
            sub.add_parser("kubeconfig", help="write a kubectl context for the gateway")
        )
        sub.add_parser(
            "kubectl-credential",
            help="print an ExecCredential for kubectl (the kubeconfig's exec plugin runs this)",
        )
    return parser


COMMANDS = {"apply": cmd_apply, "get": cmd_get, "delete": cmd_delete}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "up":
        from shipyard import up

        return up.run_up(args)
    if args.command == "migrate":
        return cmd_migrate(args, None)
    if args.command in ("login", "logout", "kubeconfig", "kubectl-credential"):
        from shipyard import auth

        return {
            "login": auth.run_login,
            "logout": auth.run_logout,
            "kubeconfig": auth.run_kubeconfig,
            "kubectl-credential": auth.run_kubectl_credential,
        }[args.command](args)
    settings = ClientSettings(url=args.server)
    client = Client(settings)
    try:
        if args.command == "logs":
            from shipyard import logs

            return logs.run(args, client)
        return COMMANDS[args.command](args, client)
    except ApiError as exc:
        _err(_explain(exc))
        return 1
    except kinds.UnknownKindError as exc:
        _err(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `shipyard get ... | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0
    except OSError as exc:
        _err(f"cannot reach the gateway at {settings.url}: {exc} (is `make up` running?)")
        return 1
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())

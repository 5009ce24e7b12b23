"""``python -m app serve``; ``python -m app clients`` create, list, revoke, rotate, purge,
limits and recount; ``python -m app tasks purge-expired``; ``python -m app models list|reload``."""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from app import crud
from app.core.config import FORMATS, Settings, get_settings
from app.core.db import Database
from app.core.errors import Conflict, NotFound
from app.core.security import hash_key, new_key
from app.services.limits import Limits

# The registry and the storage commands import torch and meta_core (seconds); the client and
# task commands do without them, so they are imported where they are used.

# A subcommand: its parsed arguments and the service's settings in, the exit status out.
Command = Callable[[argparse.Namespace, Settings], int]
DatabaseCommand = Callable[[argparse.Namespace, Settings, Database], None]


def multiprocess_metrics() -> None:
    """Each worker writes its metrics to files in PROMETHEUS_MULTIPROC_DIR (a fresh temporary
    folder unless set, emptied at start: old files would count twice), and /metrics sums
    them."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="metrics-")
    os.makedirs(folder, exist_ok=True)
    for stale in Path(folder).glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder


def finite_float(text: str) -> float:
    """A float option's value, refused unless finite: a limit of inf or nan means nothing, and
    PostgreSQL's JSON cannot store either."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    command: Command = args.func
    return command(args, settings)


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand, each bound to its function by ``set_defaults(func=...)``."""
    parser = argparse.ArgumentParser(prog="python -m app")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser("serve", help="run the API with uvicorn")
    serve_parser.add_argument("--host")
    serve_parser.add_argument("--port", type=int)
    serve_parser.add_argument("--workers", type=int)
    serve_parser.set_defaults(func=serve)
    add_clients_actions(sub.add_parser("clients", help="manage API clients"))
    tasks = sub.add_parser("tasks", help="manage stored tasks")
    tsub = tasks.add_subparsers(dest="action", required=True)
    tsub.add_parser("purge-expired", help="delete every expired task now").set_defaults(
        func=tasks_purge_expired
    )
    store = tsub.add_parser(
        "store",
        help="store every task again as the settings (or these options) say: compacts tasks "
        "stored before, or readies the database for a downgrade",
    )
    store.add_argument("--storage", choices=FORMATS, help="default: TASK_STORAGE's choice")
    store.add_argument("--compression", choices=["zlib", "none"], help="default: TASK_COMPRESSION")
    store.add_argument("--model", help="only the tasks of this meta-model")
    store.set_defaults(func=tasks_store)
    models = sub.add_parser("models", help="the meta-models in the model folders")
    msub = models.add_subparsers(dest="action", required=True)
    msub.add_parser(
        "list", help="check every artifact; list what is served and what is refused"
    ).set_defaults(func=models_command)
    msub.add_parser(
        "reload",
        help="check every artifact, then have every API process on the database scan its "
        "folders now (PostgreSQL; on SQLite each process does within MODEL_POLL_SECONDS)",
    ).set_defaults(func=models_command)
    return parser


def add_clients_actions(clients: argparse.ArgumentParser) -> None:
    """``clients``' actions."""
    csub = clients.add_subparsers(dest="action", required=True)
    create = csub.add_parser("create", help="create a client; prints its key once, last line")
    create.add_argument("name")
    create.set_defaults(func=clients_create)
    csub.add_parser("list", help="list clients").set_defaults(func=clients_list)
    for action, help_, func in [
        ("revoke", "revoke a client's key", clients_revoke),
        ("rotate", "a new key for a client; the old one stops working", clients_rotate),
        ("purge", "delete a revoked client's tasks", clients_purge),
    ]:
        one = csub.add_parser(action, help=help_)
        one.add_argument("client_id", type=int)
        one.set_defaults(func=func)
    limits = csub.add_parser(
        "limits", help="show a client's limits; with options, override them (--reset: defaults)"
    )
    limits.add_argument("client_id", type=int)
    for name, field in Limits.model_fields.items():
        kind = int if field.annotation in (int, "int") else finite_float
        limits.add_argument(f"--{name.replace('_', '-')}", type=kind, help=field.description)
    limits.add_argument("--reset", action="store_true", help="back to the service's defaults")
    limits.set_defaults(func=clients_limits)
    csub.add_parser(
        "recount", help="recompute every client's task count and stored bytes from its tasks"
    ).set_defaults(func=clients_recount)


def serve(args: argparse.Namespace, settings: Settings) -> int:
    """``serve``: uvicorn, with metrics shared through files when there are several workers."""
    from app.core import server

    workers = args.workers or settings.workers
    if workers > 1:
        multiprocess_metrics()
    server.run(
        "app.main:app",
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=workers,
        log_level=settings.log_level.lower(),
        # RequestMetrics logs each failed request (every request at DEBUG): uvicorn's
        # access line would say it twice, and costs the predict path its formatting.
        access_log=False,
    )
    return 0


def models_command(args: argparse.Namespace, settings: Settings) -> int:
    """``models list`` and ``models reload``: 1 if an artifact is refused (it is not served;
    what is served stays), else 0."""
    from app.services.registry import MetaModelRegistry

    registry = MetaModelRegistry(
        [], [f for f in (settings.model_dir, settings.trained_model_dir) if f is not None]
    )
    report = registry.reload()
    for name in registry.names:
        for version in registry.version_names(name):
            art = registry.versions[name][version]
            mark = "  (default)" if registry.meta_models[name] is art else ""
            print(f"{name}\t{version}\t{art.manifest.content_hash[:19]}\t{art.path}{mark}")
    for why in report.refused:
        print(f"refused: {why}", file=sys.stderr)
    if args.action == "reload":
        db = Database(settings.database_url)
        try:
            with db.session() as session:
                crud.meta_models_changed(session)
            notified = db.engine.dialect.name == "postgresql"
        finally:
            db.dispose()
        if notified:
            print("every API process on the database scans its model folders now")
        else:
            print(
                "SQLite: each API process scans its model folders within MODEL_POLL_SECONDS "
                f"({settings.model_poll_seconds:g} s)"
            )
    return 1 if report.refused else 0


def on_database(command: DatabaseCommand) -> Command:
    """A command on the service's database, opened for it and disposed after: a missing or
    conflicting row, or a refused limit, is one line on stderr and exit status 1."""

    @functools.wraps(command)
    def run(args: argparse.Namespace, settings: Settings) -> int:
        db = Database(settings.database_url)
        try:
            command(args, settings, db)
        except (NotFound, Conflict) as exc:
            print(exc.detail, file=sys.stderr)
            return 1
        except ValidationError as exc:
            error = exc.errors()[0]
            print(f"--{error['loc'][0]}: {error['msg']}".replace("_", "-"), file=sys.stderr)
            return 1
        finally:
            db.dispose()
        return 0

    return run


@on_database
def tasks_purge_expired(args: argparse.Namespace, settings: Settings, db: Database) -> None:
    """``tasks purge-expired``."""
    with db.session() as session:
        purged = crud.purge_expired(session)
    print(f"deleted {purged} expired tasks")


@on_database
def tasks_store(args: argparse.Namespace, settings: Settings, db: Database) -> None:
    """``tasks store``: one line per meta-model, then the bytes before and after."""
    if args.compression is not None:
        settings = settings.model_copy(update={"task_compression": args.compression})
    from app.services.registry import MetaModelRegistry
    from app.services.storage import store_again

    registry = MetaModelRegistry(
        [], [f for f in (settings.model_dir, settings.trained_model_dir) if f is not None]
    )
    registry.reload()
    done = store_again(db, registry, settings, storage=args.storage, model=args.model)
    counts = (done.rewritten, done.unchanged, done.kept, done.not_served)
    for name in sorted(set().union(*counts)):
        print(
            f"{name}: {done.rewritten[name]} stored again, {done.unchanged[name]} unchanged, "
            f"{done.kept[name]} kept as they were (their support set does not re-adapt to "
            f"their weights bit for bit, or they are unreadable: logged), "
            f"{done.not_served[name]} not served (left as they are)"
        )
    print(f"stored bytes: {done.bytes_before} before, {done.bytes_after} after")


@on_database
def clients_create(args: argparse.Namespace, settings: Settings, db: Database) -> None:
    """``clients create NAME``: the key is printed once, as the last line."""
    key = new_key()
    with db.session() as session:
        client = crud.create_client(
            session, name=args.name, key_hash=hash_key(key), key_prefix=key[:10]
        )
    # Printed once the row is committed: a key that is shown always works.
    print(f"created client {client.id} ({client.name}); its API key, shown once:")
    print(key)


@on_database
def clients_list(args: argparse.Namespace, settings: Settings, db: Database) -> None:
    """``clients list``: id, name, key prefix and state, tab-separated."""
    with db.session() as session:
        for c in crud.list_clients(session):
            state = f"revoked {c.revoked_at:%Y-%m-%d}" if c.revoked_at else "active"
            print(f"{c.id}\t{c.name}\t{c.key_prefix}...\t{state}")


@on_database
def clients_revoke(args: argparse.Namespace, settings: Settings, db: Database) -> None:
    """``clients revoke ID``."""
    with db.session() as session:
        client = crud.revoke_client(session, client_id=args.client_id)
    print(f"revoked client {client.id} ({client.name})")


@on_database
def clients_rotate(args: argparse.Namespace, settings: Settings, db: Database) -> None:
    """``clients rotate ID``: a new key, printed once as the last line."""
    key = new_key()
    with db.session() as session:
        client = crud.rotate_key(
            session, client_id=args.client_id, key_hash=hash_key(key), key_prefix=key[:10]
        )
    print(f"new key for client {client.id} ({client.name}); the old one no longer works:")
    print(key)


@on_database
def clients_purge(args: argparse.Namespace, settings: Settings, db: Database) -> None:
    """``clients purge ID``: a revoked client's tasks."""
    with db.session() as session:
        deleted = crud.purge_tasks(session, client_id=args.client_id)
    print(f"deleted {deleted} tasks of client {args.client_id}")


@on_database
def clients_limits(args: argparse.Namespace, settings: Settings, db: Database) -> None:
    """``clients limits ID [--FIELD VALUE ...] [--reset]``: the effective limits, overrides
    marked; stored only when something changes."""
    changes = {
        name: getattr(args, name) for name in Limits.model_fields if getattr(args, name) is not None
    }
    with db.session() as session:
        client = crud.get_client(session, client_id=args.client_id)
        overrides = {} if args.reset else dict(client.limits or {})
        overrides |= changes
        effective = Limits.of(settings, overrides)  # refuses a bad value
        if changes or args.reset:
            crud.set_limits(session, client_id=client.id, limits=overrides)
    for name, value in effective.model_dump().items():
        mark = "  (override)" if name in overrides else ""
        print(f"{name}\t{value:g}{mark}")


@on_database
def clients_recount(args: argparse.Namespace, settings: Settings, db: Database) -> None:
    """``clients recount``: every client's counters from its task rows, in one transaction; a
    line for each client whose counters were wrong."""
    with db.session() as session:
        recounts = crud.recount_clients(session)
    changed = [r for r in recounts if r.now != r.was]
    for r in changed:
        print(
            f"client {r.client_id} ({r.name}): tasks {r.was[0]} -> {r.now[0]}, "
            f"stored bytes {r.was[1]} -> {r.now[1]}"
        )
    print(f"recounted {len(recounts)} clients; {len(changed)} corrected")


if __name__ == "__main__":
    sys.exit(main())

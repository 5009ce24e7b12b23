"""``python -m app serve``; ``python -m app clients`` create, list, revoke, rotate, purge,
limits and recount; ``python -m app tasks purge-expired``; ``python -m app models list|reload``."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
from pathlib import Path

from pydantic import ValidationError

from app import crud
from app.core.config import Settings, get_settings
from app.core.db import Database
from app.core.errors import Conflict, NotFound
from app.core.security import hash_key, new_key
from app.services.limits import Limits
from app.services.registry import MetaModelRegistry


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
    parser = argparse.ArgumentParser(prog="python -m app")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the API with uvicorn")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    clients = sub.add_parser("clients", help="manage API clients")
    csub = clients.add_subparsers(dest="action", required=True)
    create = csub.add_parser("create", help="create a client; prints its key once, last line")
    create.add_argument("name")
    csub.add_parser("list", help="list clients")
    revoke = csub.add_parser("revoke", help="revoke a client's key")
    revoke.add_argument("client_id", type=int)
    rotate = csub.add_parser("rotate", help="a new key for a client; the old one stops working")
    rotate.add_argument("client_id", type=int)
    purge = csub.add_parser("purge", help="delete a revoked client's tasks")
    purge.add_argument("client_id", type=int)
    limits = csub.add_parser(
        "limits", help="show a client's limits; with options, override them (--reset: defaults)"
    )
    limits.add_argument("client_id", type=int)
    for name, field in Limits.model_fields.items():
        kind = int if field.annotation in (int, "int") else finite_float
        limits.add_argument(f"--{name.replace('_', '-')}", type=kind, help=field.description)
    limits.add_argument("--reset", action="store_true", help="back to the service's defaults")
    csub.add_parser(
        "recount", help="recompute every client's task count and stored bytes from its tasks"
    )
    tasks = sub.add_parser("tasks", help="manage stored tasks")
    tsub = tasks.add_subparsers(dest="action", required=True)
    tsub.add_parser("purge-expired", help="delete every expired task now")
    models = sub.add_parser("models", help="the meta-models in the model folders")
    msub = models.add_subparsers(dest="action", required=True)
    msub.add_parser("list", help="check every artifact; list what is served and what is refused")
    msub.add_parser(
        "reload",
        help="check every artifact, then have every API process on the database scan its "
        "folders now (PostgreSQL; on SQLite each process does within MODEL_POLL_SECONDS)",
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )

    if args.command == "serve":
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

    if args.command == "models":
        return models_command(args.action, settings)

    db = Database(settings.database_url)
    try:
        if args.command == "tasks":
            with db.session() as session:
                purged = crud.purge_expired(session)
            print(f"deleted {purged} expired tasks")
        elif args.action == "create":
            key = new_key()
            with db.session() as session:
                client = crud.create_client(
                    session, name=args.name, key_hash=hash_key(key), key_prefix=key[:10]
                )
            # Printed once the row is committed: a key that is shown always works.
            print(f"created client {client.id} ({client.name}); its API key, shown once:")
            print(key)
        elif args.action == "list":
            with db.session() as session:
                for c in crud.list_clients(session):
                    state = f"revoked {c.revoked_at:%Y-%m-%d}" if c.revoked_at else "active"
                    print(f"{c.id}\t{c.name}\t{c.key_prefix}...\t{state}")
        elif args.action == "revoke":
            with db.session() as session:
                client = crud.revoke_client(session, client_id=args.client_id)
            print(f"revoked client {client.id} ({client.name})")
        elif args.action == "rotate":
            key = new_key()
            with db.session() as session:
                client = crud.rotate_key(
                    session, client_id=args.client_id, key_hash=hash_key(key), key_prefix=key[:10]
                )
            print(f"new key for client {client.id} ({client.name}); the old one no longer works:")
            print(key)
        elif args.action == "purge":
            with db.session() as session:
                deleted = crud.purge_tasks(session, client_id=args.client_id)
            print(f"deleted {deleted} tasks of client {args.client_id}")
        elif args.action == "recount":
            recount_command(db)
        else:
            changes = {
                name: getattr(args, name)
                for name in Limits.model_fields
                if getattr(args, name) is not None
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


def models_command(action: str, settings: Settings) -> int:
    """``models list`` and ``models reload``: 1 if an artifact is refused (it is not served;
    what is served stays), else 0."""
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
    if action == "reload":
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


def recount_command(db: Database) -> None:
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

"""``python -m app serve`` and ``python -m app clients create|list|revoke``."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime

from sqlalchemy import select

from app import crud
from app.core.config import get_settings
from app.core.db import make_engine, make_sessionmaker
from app.core.security import hash_key, new_key
from app.models import Client


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
    args = parser.parse_args(argv)
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )

    if args.command == "serve":
        import uvicorn

        uvicorn.run(
            "app.main:app",
            host=args.host or settings.host,
            port=args.port or settings.port,
            workers=args.workers or settings.workers,
            log_level=settings.log_level.lower(),
        )
        return 0

    sessions = make_sessionmaker(make_engine(settings.database_url))
    with sessions() as session:
        if args.action == "create":
            key = new_key()
            client = crud.create_client(
                session, name=args.name, key_hash=hash_key(key), key_prefix=key[:10]
            )
            print(f"created client {client.id} ({client.name}); its API key, shown once:")
            print(key)
        elif args.action == "list":
            for c in session.scalars(select(Client).order_by(Client.id)):
                state = f"revoked {c.revoked_at:%Y-%m-%d}" if c.revoked_at else "active"
                print(f"{c.id}\t{c.name}\t{c.key_prefix}...\t{state}")
        else:
            client = session.get(Client, args.client_id)
            if client is None:
                print(f"no client {args.client_id}", file=sys.stderr)
                return 1
            client.revoked_at = datetime.now(UTC)
            session.commit()
            print(f"revoked client {client.id} ({client.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

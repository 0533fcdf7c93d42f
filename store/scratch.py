"""Throwaway Postgres databases (the test suite, the cluster scenarios, the bench).

A scratch database is created through an admin connection (``admin_dsn``, a
plain ``postgresql://`` DSN to an existing database such as ``postgres``) and
dropped the same way, after ending whatever sessions still use it.
"""
from __future__ import annotations

import asyncpg


def database_url(admin_dsn: str, name: str) -> str:
    """The SQLAlchemy (asyncpg) URL of database ``name`` on the admin DSN's server."""
    base = admin_dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}"


async def create_database(admin_dsn: str, name: str) -> str:
    """Create database ``name``; returns its SQLAlchemy URL."""
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return database_url(admin_dsn, name)


async def drop_database(admin_dsn: str, name: str) -> None:
    """End the sessions still connected to ``name`` and drop it (a missing one is fine)."""
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await admin.close()

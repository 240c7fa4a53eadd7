"""Relational state: tables (SQLModel), the async engine and Alembic migrations."""

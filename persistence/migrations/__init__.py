"""Alembic's script directory: ``env.py`` and the revisions in ``versions/``.

Run through :mod:`persistence.migrate` (``create_schema`` at start, ``paygate db upgrade``);
see docs/migrations.md.
"""

"""The node's database (Alembic owns the schema, ``migrations/``): the append-only audit log
(:mod:`node.db.audit`), the tables of instances, the export outbox and the analysis archive
(:mod:`node.db.tables`), and engines and sessions (:mod:`node.db.engine`)."""

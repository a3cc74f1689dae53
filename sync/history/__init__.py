"""Decision history in SQL (SQLAlchemy Core over PostgreSQL or SQLite): schema, writes, queries."""

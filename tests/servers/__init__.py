"""Real servers started by tests and benchmarks: PostgreSQL (initdb + pg_ctl) and Chromium."""

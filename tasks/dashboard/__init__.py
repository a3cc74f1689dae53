"""The operations dashboard: server-rendered pages over the decision history and the state store."""

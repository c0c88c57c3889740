"""The actors (provider actors, the dispatcher, the supervisor) and the request loop
callers run beside them. Strictly private; see ARCHITECTURE.md."""

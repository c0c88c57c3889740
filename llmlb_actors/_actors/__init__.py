"""The actors: provider actors, the dispatcher and the supervisor. Strictly private."""

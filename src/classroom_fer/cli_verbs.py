"""Registry of the verbs that live beside their subsystems (filled in by pipeline, export, serve)."""
REGISTER: list = []

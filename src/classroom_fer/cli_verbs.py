"""Registry of the verbs that live beside their subsystems (filled in by pipeline, export, serve)."""
REGISTER: list = []
from .serve.cli import add_serve; REGISTER.append(add_serve)  # noqa: E402,E702
from .pipeline.cli import add_analyze; REGISTER.append(add_analyze)  # noqa: E402,E702
from .export.cli import add_benchmark, add_export; REGISTER += [add_export, add_benchmark]  # noqa: E402,E702

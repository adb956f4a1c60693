"""The verbs that live beside their subsystems. Each module imports its heavy dependencies
(torch, fastapi) only when its verb runs, so the light install can still list every verb."""
from .export.cli import add_benchmark, add_export
from .pipeline.cli import add_analyze
from .serve.cli import add_serve

REGISTER = [add_analyze, add_serve, add_export, add_benchmark]

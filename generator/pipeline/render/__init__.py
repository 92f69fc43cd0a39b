"""Render targets. Adding an output kind means adding a module here and listing it."""

from __future__ import annotations

from generator.pipeline.render.base import (
    OutputFile,
    RenderContext,
    Target,
    template_env,
)
from generator.pipeline.render.code import (
    ClientsTarget,
    DriversTarget,
    MessagingTarget,
    ServicesTarget,
)
from generator.pipeline.render.conformance import ConformanceTarget
from generator.pipeline.render.deploy import DeployTarget
from generator.pipeline.render.diagrams import DiagramsTarget
from generator.pipeline.render.ir_json import IrTarget
from generator.pipeline.render.migrations import MigrationsTarget
from generator.pipeline.render.models import ModelsTarget
from generator.pipeline.render.openapi_bundle import OpenApiTarget
from generator.pipeline.render.package import PackageTarget

TARGETS: tuple[Target, ...] = (
    PackageTarget(),
    IrTarget(),
    OpenApiTarget(),
    ModelsTarget(),
    ClientsTarget(),
    MessagingTarget(),
    ServicesTarget(),
    DriversTarget(),
    ConformanceTarget(),
    DiagramsTarget(),
    MigrationsTarget(),
    DeployTarget(),
)

__all__ = [
    "TARGETS",
    "OutputFile",
    "RenderContext",
    "Target",
    "template_env",
]

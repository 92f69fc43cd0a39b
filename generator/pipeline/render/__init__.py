"""Render targets. Adding an output kind means adding a module here and listing it."""

from __future__ import annotations

from generator.render.base import (
    OffloadedTarget,
    OutputFile,
    RenderContext,
    Target,
    template_env,
)
from generator.render.code import ClientsTarget, DriversTarget, MessagingTarget, ServicesTarget
from generator.render.conformance import ConformanceTarget
from generator.render.diagrams import DiagramsTarget
from generator.render.ir_json import IrTarget
from generator.render.migrations import MigrationsTarget
from generator.render.models import ModelsTarget
from generator.render.openapi_bundle import OpenApiTarget
from generator.render.package import PackageTarget

TARGETS: tuple[Target | OffloadedTarget, ...] = (
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
)

__all__ = [
    "TARGETS",
    "OffloadedTarget",
    "OutputFile",
    "RenderContext",
    "Target",
    "template_env",
]

"""The runtime of one component instance: what its behaviours can reach."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specstack_runtime.clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from specstack_runtime.auth import TokenValidator
    from specstack_runtime.bus import Bus
    from specstack_runtime.config import StackConfig
    from specstack_runtime.http import ClientSet
    from specstack_runtime.stackinfo import StackInfo
    from specstack_runtime.store import Store
    from specstack_runtime.trace import TraceRecorder


@dataclass
class ServiceRuntime:
    """Everything a component's behaviours may use.

    `shared` holds per-stack state that several components of one process share
    (the object store of the swift proxy, agent state); `local` holds state of this
    component instance only (a compute node's image cache, a driver's guests).
    """

    component: str
    project: str
    host: str  # the topology node instance, e.g. "controller" or "compute-2"
    info: StackInfo
    config: StackConfig
    bus: Bus
    trace: TraceRecorder
    clients: ClientSet
    store: Store | None = None
    auth: TokenValidator | None = None
    driver: Any = None
    data_dir: Path = Path(".specstack")
    shared: dict[str, Any] = field(default_factory=dict)
    local: dict[str, Any] = field(default_factory=dict)
    clock: Clock = SYSTEM_CLOCK  # what `now` reads (heartbeats' age); a test's FakeClock

    def require_store(self) -> Store:
        if self.store is None:
            raise RuntimeError(f"component {self.component} has no database in the spec")
        return self.store

    async def settle(self) -> None:
        """Make the driver's changes durable before this component reports anything.

        A driver may write its state behind (the fake hypervisor does); its `sync`
        puts every change made so far on disk. Called before each message sent and
        before a consumed message is answered or finished, so what another
        component was told survives a crash of this one.
        """
        if self.driver is None:
            return
        target = getattr(self.driver, "impl", self.driver)  # a generated adapter's driver
        pending = getattr(target, "pending", None)
        if pending is not None and pending():
            await target.sync()

    async def service_token(self) -> str:
        """A token for this service's own user (to call other services as itself)."""
        if self.auth is None:
            raise RuntimeError(f"component {self.component} has no identity client")
        return await self.auth.service_token()

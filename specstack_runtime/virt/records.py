"""A host whose guests are records kept as JSON in a state file: the fake and qemu drivers.

What both do the same way lives here once: the host's capacity and name, loading the
records, encoding them, finding a guest, a new guest's record, and a move's arrival.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from specstack_runtime import jsoncodec
from specstack_runtime.virt import InstanceExists, InstanceNotFound
from specstack_runtime.virt.common import check_capacity, instance_uuid, read_guests

STATE_FORMAT = 1


class RecordedHost:
    """A host with capacity from its constructor and its guests by instance uuid.

    `state_file` None keeps the guests in memory only.
    """

    hypervisor_type: str
    default_hostname: str
    #: a guest's memory when its instance names none
    default_memory_mb = 0

    if TYPE_CHECKING:  # what each driver provides

        def _note(self, guest: dict[str, Any], text: str) -> None: ...
        async def spawn(
            self, instance: Any, image: Any, network_info: Any, block_device_info: Any
        ) -> None: ...
        async def power_off(self, instance: Any) -> None: ...

    def __init__(
        self,
        state_file: Path | str | None = None,
        *,
        vcpus: int = 8,
        memory_mb: int = 16384,
        local_gb: int = 200,
        hostname: str | None = None,
    ) -> None:
        self.vcpus, self.memory_mb, self.local_gb = check_capacity(vcpus, memory_mb, local_gb)
        self.state_file = Path(state_file) if state_file is not None else None
        self.hostname = self.default_hostname if hostname is None else hostname
        self.guests: dict[str, dict[str, Any]] = {}
        self._setup()
        if self.state_file is not None:
            guests = self._read_state(self.state_file)
            if guests is not None:
                self.guests = guests
                self._loaded()

    def _setup(self) -> None:
        """The driver's own state, made before the guests are loaded."""

    def _read_state(self, path: Path) -> dict[str, Any] | None:
        """The guests the state file records; None when there is none yet."""
        return read_guests(path, f"{self.hypervisor_type} driver") if path.exists() else None

    def _loaded(self) -> None:
        """What the driver does with the guests read from its state file."""

    def _encoded(self, **more: Any) -> bytes:
        data = {"format": STATE_FORMAT, "hostname": self.hostname, "guests": self.guests, **more}
        return jsoncodec.dumps(data, sort_keys=True)

    @staticmethod
    def _uuid(instance: Any) -> str:
        return instance_uuid(instance)

    def _guest(self, instance: Any) -> dict[str, Any]:
        uuid = self._uuid(instance)
        guest = self.guests.get(uuid)
        if guest is None:
            raise InstanceNotFound(uuid)
        return guest

    def _new_guest(self, instance: Any) -> dict[str, Any]:
        """A new guest's record with its instance's name and sizes; InstanceExists if the
        instance has one here already."""
        uuid = self._uuid(instance)
        if uuid in self.guests:
            raise InstanceExists(uuid)
        return {
            "uuid": uuid,
            "name": str(instance.get("name") or uuid),
            "vcpus": int(instance.get("vcpus") or 1),
            "memory_mb": int(instance.get("memory_mb") or self.default_memory_mb),
            "root_gb": int(instance.get("root_gb") or 0),
        }

    async def _arrive(
        self,
        instance: Any,
        image: Any,
        network_info: Any,
        block_device_info: Any,
        *,
        power_on: bool,
        source: object,
    ) -> dict[str, Any]:
        """A move's destination side: the guest spawned from what its source handed over,
        noted, and powered off unless `power_on`."""
        await self.spawn(instance, image, network_info, block_device_info)
        guest = self._guest(instance)
        self._note(guest, f"moved here from {source}")
        if not power_on:
            await self.power_off(instance)
        return guest

    async def list_instances(self) -> list[str]:
        return [str(g["name"]) for g in self.guests.values()]

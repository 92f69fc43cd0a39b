"""The driver methods that move a guest (resize, cold migration) for a driver that does not
move guests yet (libvirt): each refuses before it touches the guest, so the move fails
(the instance in ERROR with this message as its fault) and the guest stays as it was."""

from __future__ import annotations

from typing import TYPE_CHECKING

from specstack_runtime.virt import VirtError

if TYPE_CHECKING:  # the contract generated from spec/hypervisors.yaml (checked in its adapter)
    from generated.drivers.types import BlockDevice, Instance, Vif


class Unmoved:
    hypervisor_type: str
    #: what the driver contract's tests skip for such a driver
    unsupported = (
        "migrate_disk_and_power_off",
        "finish_migration",
        "confirm_migration",
        "finish_revert_migration",
    )

    def _refuse(self) -> VirtError:
        return VirtError(
            f"the {self.hypervisor_type} driver does not move guests (resize, migrate)"
        )

    async def migrate_disk_and_power_off(self, instance: Instance, dest: str) -> str:
        raise self._refuse()

    async def finish_migration(
        self,
        instance: Instance,
        disk_info: str,
        network_info: list[Vif],
        block_device_info: list[BlockDevice],
        power_on: bool,
    ) -> None:
        raise self._refuse()

    async def confirm_migration(self, instance: Instance) -> None:
        raise self._refuse()

    async def finish_revert_migration(
        self,
        instance: Instance,
        network_info: list[Vif],
        block_device_info: list[BlockDevice],
        power_on: bool,
    ) -> None:
        raise self._refuse()

"""The driver methods that move a guest (resize, cold migration) for a driver that does not
move guests yet (libvirt): each refuses before it touches the guest, so the move fails
(the instance in ERROR with this message as its fault) and the guest stays as it was."""

from __future__ import annotations

from typing import Any, NoReturn

from specstack_runtime.virt import VirtError


class Unmoved:
    hypervisor_type: str
    #: what the driver contract's tests skip for such a driver
    unsupported = (
        "migrate_disk_and_power_off",
        "finish_migration",
        "confirm_migration",
        "finish_revert_migration",
    )

    async def _refuse(self, *_args: Any, **_kwargs: Any) -> NoReturn:
        """Any of the moves, whatever its arguments (mypy checks the driver against the
        contract's signatures where its adapter is generated)."""
        raise VirtError(f"the {self.hypervisor_type} driver does not move guests (resize, migrate)")

    migrate_disk_and_power_off = finish_migration = _refuse
    confirm_migration = finish_revert_migration = _refuse

"""What the auth matrix can test, kept free of the conformance library's heavy imports.

`specstack generate` reads it to decide which checks each operation gets; the
library (`auth.py`) implements them.
"""

from __future__ import annotations

#: Path parameters naming a resource the library can make in the admin project
#: (to check that another project's resource is hidden from the demo user: 404).
RESOURCE_PARAMS = ("server_id", "network_id", "subnet_id", "port_id", "volume_id", "image_id")

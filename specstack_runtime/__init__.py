"""Hand-written runtime library imported by generated services."""

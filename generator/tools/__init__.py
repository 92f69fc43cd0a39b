"""Tools beside the pipeline: `python -m generator.tools.guestimage` builds the tiny test guest."""

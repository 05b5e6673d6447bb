"""The thin shell around the core: kopf handlers, API writes, metrics."""

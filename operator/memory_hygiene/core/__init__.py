"""The pure core: plain data in, plain data out. No kopf, no HTTP, no clients."""

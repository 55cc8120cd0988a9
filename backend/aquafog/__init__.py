"""AquaFog backend: the fog gateway (ingest, store, commands, API)."""

__version__ = "0.1.0"

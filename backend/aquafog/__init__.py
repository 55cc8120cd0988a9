"""AquaFog: the fog gateway, the city cloud and the tools around them."""

__version__ = "0.2.0"

"""moorage.drivers."""

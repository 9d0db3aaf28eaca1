"""moorage.server."""

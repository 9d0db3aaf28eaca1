"""moorage.api."""

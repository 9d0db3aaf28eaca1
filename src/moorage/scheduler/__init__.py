"""moorage.scheduler."""

"""moorage.cli."""

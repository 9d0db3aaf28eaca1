"""moorage.controllers."""

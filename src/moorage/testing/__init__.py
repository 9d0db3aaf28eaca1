"""moorage.testing."""

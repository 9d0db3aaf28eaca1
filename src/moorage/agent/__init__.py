"""moorage.agent."""

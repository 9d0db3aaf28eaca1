"""moorage: a self-hosted container platform for small teams."""

__version__ = "0.1.0"

"""Integration with Nova's API: validators for the ``balloon:*`` extra specs."""

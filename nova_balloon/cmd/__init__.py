"""Console entry points: nova-balloon-agent and nova-balloon."""

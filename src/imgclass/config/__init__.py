"""params.yaml's typed schema and DVC's view of it."""

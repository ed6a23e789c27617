"""Placeholder: arrives with the gRPC service (issue 3)."""

"""HTTP service and client."""

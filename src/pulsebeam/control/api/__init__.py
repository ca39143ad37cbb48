"""The control plane's REST API (mounted at ``/api/v1``)."""

from pulsebeam.control.api.app import create_api

__all__ = ["create_api"]

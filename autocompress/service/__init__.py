"""The compression service: an HTTP API over run directories, with searches run as
local processes or Ray Jobs."""

from autocompress.service.app import ServiceConfig, create_app
from autocompress.service.jobs import JobManager

__all__ = ["JobManager", "ServiceConfig", "create_app"]

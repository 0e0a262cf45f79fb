"""The compression service: an HTTP API over run directories, with searches run as
local processes or Ray Jobs."""

from autocompress.service.app import ServiceConfig, create_app
from autocompress.service.jobs import JobManager
from autocompress.service.token import check_token, write_token_file

__all__ = ["JobManager", "ServiceConfig", "check_token", "create_app", "write_token_file"]

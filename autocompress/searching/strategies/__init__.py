"""The registered strategies. Importing this package imports every module in it (a new
strategy is one file here) and the strategies other packages declare under the entry-point
group ``autocompress.strategies``; each registers itself with
:func:`autocompress.searching.base.register_strategy`."""

import importlib
import logging
import pkgutil
from importlib.metadata import entry_points

log = logging.getLogger("autocompress")

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

for _entry in entry_points(group="autocompress.strategies"):
    try:
        _entry.load()
    except Exception as error:  # a broken plug-in must not take the built-in strategies down with it
        log.warning("strategy plug-in %s (%s) did not load: %s", _entry.name, _entry.value, error)

"""The report page's one style sheet, inline in report.html (a file that must stand alone).

Kept apart from the builder, which imports matplotlib, so that the service can hash it for
its Content-Security-Policy (``style-src 'sha256-...'``): the dashboard shows a report in a
sandboxed frame that inherits the dashboard's policy, and that policy allows this sheet and
no other inline style."""

import base64
import hashlib

REPORT_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}\n"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}img{max-width:100%}\n"
    "figure{margin:1.5em 0}figcaption{color:#666;font-size:90%}"
)


def report_style_source() -> str:
    """The sheet as a CSP source expression: ``'sha256-<base64 of its SHA-256>'``."""
    digest = hashlib.sha256(REPORT_STYLE.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"

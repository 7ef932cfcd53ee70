"""The dashboard: server-rendered pages under `/ui`, served by `shoal server`.

Reads and actions go through the service layer, as the AWS APIs do; a little
vanilla JavaScript polls small JSON documents under `/ui/api/` for the live
parts (job status, array progress, new log lines).
"""

from __future__ import annotations

from shoal.web.routes import is_dashboard, serve

__all__ = ["is_dashboard", "serve"]

"""The multi-worker supervisor: uvicorn's, except that SIGHUP reloads each worker's config in place.

uvicorn restarts every worker on SIGHUP; a worker that then met a bad config file would fail to
start. modelplex forwards SIGHUP instead: each worker reloads in its own process, keeps its
connections, and keeps serving its old config if the new one is rejected.
"""

from __future__ import annotations

import logging
import os
import signal

from uvicorn.supervisors.multiprocess import Multiprocess

log = logging.getLogger("modelplex.supervisor")


class Supervisor(Multiprocess):
    def handle_hup(self) -> None:
        log.info("SIGHUP: asking %d workers to reload their config", len(self.processes))
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signal.SIGHUP)

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
    def handle_term(self) -> None:
        # Each worker holds its own copy of the listening socket and closes it once its drain
        # delay is over. The supervisor's copy would keep the port listening until the last worker
        # exits: new connections would then wait in the kernel's backlog for the whole drain and be
        # reset, instead of being refused at once (so a load balancer can retry them elsewhere).
        for sock in self.sockets:
            sock.close()
        super().handle_term()

    def handle_hup(self) -> None:
        log.info("SIGHUP: asking %d workers to reload their config", len(self.processes))
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signal.SIGHUP)

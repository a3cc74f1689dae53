"""The routing file the HTTP app serves: read on first use, read again when it (or a list file
it names) changes on disk, as the workers do (both stamp it with tasks/routing_files.py), so
the app's webhook filter, its known reps and its dry runs follow the rules the workers route
with."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from config.routing import ConfigError
from connectors import registry
from sync.compiler import CompiledRouting
from tasks.routing_files import Stamp, files_stamp, routing_files

log = logging.getLogger("tasks.http")


class ServedRouting:
    """The compiled routing file at `config`, or None (unset, or never readable). A broken edit
    is logged once and the previous version kept: `account-router validate` says what is
    wrong, and a typo pushed to a running service must not change what it does."""

    def __init__(self, config: str | None, list_roots: tuple[str, ...] = ()) -> None:
        self.config = config
        self.list_roots = list_roots
        self._routing: CompiledRouting | None = None
        self._stamp: Stamp | None = None
        self._refused: Stamp | None = None
        self._lock = threading.Lock()

    def __call__(self) -> CompiledRouting | None:
        """The current version (stats the files: call it off the event loop)."""
        if not self.config:
            return None
        with self._lock:
            stamp = files_stamp(routing_files(self.config, self._routing))
            if stamp in (self._stamp, self._refused):
                return self._routing
            # Stamped before reading: an edit landing during the read shows at the next call.
            before = files_stamp([Path(self.config)])
            try:
                routing = registry.load_routing(self.config, list_roots=self.list_roots)
            except (ConfigError, OSError) as exc:
                self._refused = stamp
                log.error("routing file %s cannot be used%s: %s", self.config,
                          "; keeping the previous version" if self._routing else "", exc)
                return self._routing
            if self._routing is not None:
                log.warning("routing file %s changed: the HTTP app follows it", self.config)
            self._routing = routing
            self._stamp = before + files_stamp(routing_files(self.config, routing))[1:]
            return routing


def routed_properties(crm: str, routing: CompiledRouting | None) -> dict[str, frozenset[str]]:
    """Per CRM object, the properties whose change can alter a decision: every field the
    connector reads for this routing file (the owner and the rest of its field maps, the
    `fields.<x>` its rules name), as `registry.read_fields` computes them for the workers."""
    return {obj: frozenset(fields) for obj, fields in registry.read_fields(crm, routing).items()}

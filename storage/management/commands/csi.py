"""`manage.py csi`: serve the CSI endpoint of this node (storage/csi/) in the foreground."""

from __future__ import annotations

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Serve the Container Storage Interface (CSI v1: Identity, Controller and Node services) on a "
        'unix socket, so Kubernetes or Nomad can use Hivemind\'s volumes (docs/storage.md, "CSI"). '
        "The socket is HIVEMIND_CSI_SOCKET unless --socket names another; `manage.py up` runs this "
        "when HIVEMIND_CSI_SOCKET is set. "
        "Example: ./manage.py csi --socket /var/lib/kubelet/plugins/csi.hivemind.io/csi.sock"
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--socket", default="", help="absolute path of the unix socket (default: HIVEMIND_CSI_SOCKET)"
        )

    def handle(self, *args, socket: str, **options):
        from storage.csi.server import serve

        path = socket or settings.CONFIG.csi_socket
        if not path:
            raise CommandError("no socket: set HIVEMIND_CSI_SOCKET or pass --socket PATH")
        try:
            server = serve(path)
        except ValueError as exc:
            raise CommandError(f"--socket: {exc}") from None
        except RuntimeError as exc:  # grpc: the address cannot be bound
            raise CommandError(f"cannot listen on {path}: {exc}") from None
        self.stdout.write(f"CSI endpoint csi.hivemind.io of node {settings.NODE_NAME} listening on {path}")
        self.stdout.flush()
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        stop.wait()
        server.stop(grace=10).wait()

"""``[core] hostname_callable`` of the deployment: each Celery worker names itself (``worker1``,
``worker2``) as separate machines would, so task instances show which worker ran them."""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("AURALYTIK_DEPLOYMENT_HOSTNAME") or socket.getfqdn()

"""The actor layer: thin Ray actors over plain classes in ``actors.core``.

Importing it installs RunnerHost's redacting log filter in this process
(idempotent, :func:`protocol.logs.install_log_redaction`). Every RunnerHost
actor class lives under this package, so every actor process — and every
Serve replica, which imports the host from here — has the filter before its
constructor runs: the belt to the ``worker_process_setup_hook`` that Ray
applies where a job's runtime env names it.
"""
from protocol.logs import install_log_redaction

install_log_redaction()

"""The web console: first-run setup, sign-in, projects and members, keys (the secret shown once),
bans, and monitoring (usage charts, connection log, audit log). Server-rendered pages (Jinja2)
over the control-plane store; mount :func:`create_console` at ``/console``.
"""

from pulsebeam.console.app import announce_first_run, create_console

__all__ = ["announce_first_run", "create_console"]

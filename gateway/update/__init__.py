"""Signed self-update with A/B rollback (issue 13): releases are targets of the config repository.

The daemon (unprivileged) finds, downloads and stages a release through the same TUF client
as configs (gateway/remote/client.py) and watches a release on trial through the same
confirmation window; the root step `schwebe update apply` (run by systemd before each start)
re-verifies what was staged, switches the ``current`` link and switches it back.
"""

#: Largest release package accepted (bytes), by the operator's tools and by gateways.
MAX_RELEASE = 512 << 20
#: The daemon exits with this code after staging a release or when a release on trial asks
#: to be rolled back: systemd's Restart=always starts it again, through `schwebe update apply`.
EXIT_UPDATE = 75
#: Fault injection for the power-cut tests: `update apply` SIGKILLs itself at this step.
KILL_AT_ENV = "SCHWEBE_UPDATE_KILL_AT"

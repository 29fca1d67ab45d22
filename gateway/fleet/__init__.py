"""Operator side of remote configuration (`schwebe fleet ...`): a TUF repository of configs.

The repository is a plain directory (metadata/, targets/, keys/, fleet.json) that any
static web server serves; MQTT mirroring, status, rollout and on-site bundles read it.
"""


class FleetError(Exception):
    """An operator-facing failure: the message says what, where and what to do."""

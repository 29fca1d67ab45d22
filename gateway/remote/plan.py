"""What a new config changes, and so what has to restart (as little as possible)."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.config import Config, ForwardCommon

#: Sections applied while everything else keeps running; any other change restarts the
#: daemon's components in-process (a few seconds without sources).
HOT = ("forward", "web", "log", "remote_config")


@dataclass(frozen=True)
class Plan:
    restart: tuple[str, ...] = ()  # sections whose change needs every component restarted
    removed: tuple[str, ...] = ()  # forwarder names
    changed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    web: bool = False
    log: bool = False
    forwarders: dict[str, ForwardCommon] = field(default_factory=dict)  # the new ones by name

    @property
    def nothing(self) -> bool:
        return not (self.restart or self.removed or self.changed or self.added or self.web
                    or self.log)

    def describe(self) -> str:
        if self.restart:
            return f"restart of all components ({', '.join(self.restart)} changed)"
        parts = [f"{what} forwarder {n}" for what, names in
                 (("restart", self.changed), ("start", self.added), ("stop", self.removed))
                 for n in names]
        if self.web:
            parts.append("restart web")
        if self.log:
            parts.append("new log settings")
        return ", ".join(parts) or "nothing to change"


def plan(old: Config, new: Config) -> Plan:
    restart = tuple(name for name in old.__dataclass_fields__
                    if name not in HOT and getattr(old, name) != getattr(new, name))
    before = {f.name: f for f in old.forwarders}
    after = {f.name: f for f in new.forwarders}
    return Plan(
        restart=restart,
        removed=tuple(n for n in before if n not in after),
        changed=tuple(n for n in before if n in after and before[n] != after[n]),
        added=tuple(n for n in after if n not in before),
        web=old.web != new.web,
        log=old.log != new.log,
        forwarders=after,
    )

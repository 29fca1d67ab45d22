"""Rollout in waves: a fleet-wide config reaches a few gateways first, the rest only once they
have confirmed it.

Wave k gives its new gateways per-gateway targets ``configs/<eui>.toml`` (the same bytes,
one version), publishes, mirrors, notifies them and waits until each reports ``confirmed``
with that version. A ``rolled-back`` or ``refused`` one stops the rollout: later waves are
never published. The final wave stores ``configs/all.toml`` and removes the per-gateway
targets the rollout made, in one publish; the gateways of earlier waves already run those
bytes, so for them it is confirmed at once.

fleet.json remembers the per-gateway targets a rollout made (``rollout_targets``), so a
rollout run again after a stop takes those gateways back instead of treating them as
gateways with a config of their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gateway.fleet import FleetError
from gateway.fleet.mqtt import (
    FAILED,
    FleetLink,
    GatewayState,
    gateway_states,
    mirror,
    notify,
    read_states,
)
from gateway.fleet.repo import Repository, config_target

ALL = config_target(None)
KEPT = (" (the gateways of the waves so far keep their per-gateway target until a rollout "
        "runs to the end)")


class RolloutError(FleetError):
    """A stopped rollout; ``code`` is the exit status (1 a gateway failed, 2 timeout)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class WaveStep:
    """One wave: a count (``5``) or a share of the fleet (``10%``), cumulative."""

    count: int | None
    percent: float | None

    def size(self, fleet: int) -> int:
        if self.count is not None:
            return min(self.count, fleet)
        assert self.percent is not None
        return min(fleet, max(1, math.ceil(fleet * self.percent / 100.0)))


def parse_waves(spec: str) -> list[WaveStep]:
    steps: list[WaveStep] = []
    for part in spec.split(","):
        p = part.strip()
        try:
            if p.endswith("%"):
                pct = float(p[:-1])
                if not 0 < pct <= 100:
                    raise ValueError
                steps.append(WaveStep(None, pct))
            else:
                n = int(p)
                if n < 1:
                    raise ValueError
                steps.append(WaveStep(n, None))
        except ValueError:
            raise FleetError(f"--waves {spec}: {p!r} is neither a gateway count (1, 5) nor a share "
                             "of the fleet (10%)") from None
    if not steps or steps[-1].percent != 100:
        raise FleetError(f"--waves {spec}: the last wave must be 100% (e.g. 1,10%,100%)")
    return steps


def plan_waves(steps: Sequence[WaveStep], fleet: Sequence[str]) -> list[list[str]]:
    """The new gateways of each wave (cumulative sizes); empty waves before the last dropped."""
    waves: list[list[str]] = []
    done = 0
    for i, step in enumerate(steps):
        end = max(done, step.size(len(fleet)))
        if end > done or i == len(steps) - 1:
            waves.append(list(fleet[done:end]))
        done = end
    return waves


Say = Callable[[str], None]


def _state_topic(link: FleetLink, eui: str) -> str:
    return f"{link.prefix}/gateway/{eui}/state/config"


async def _wait(link: FleetLink, euis: Sequence[str], version: int, timeout: float, wave: int,  # noqa: ASYNC109
                before: Mapping[str, bytes | None]) -> None:
    """Until each of ``euis`` has confirmed ``version``; RolloutError on a failure or timeout.

    A failure is a ``rolled-back``/``refused`` state naming ``version``, or any such state
    reported since this wave began (``before``: the state messages then), whichever version
    it names: a gateway may report the version it returned to.
    """
    def states() -> dict[str, GatewayState]:
        return gateway_states(link.messages, link.prefix)

    def failed() -> list[GatewayState]:
        now = states()
        return [now[e] for e in euis if e in now and now[e].state in FAILED
                and (now[e].version == version or link.messages.get(_state_topic(link, e)) != before.get(e))]

    def confirmed(st: GatewayState | None) -> bool:
        return st is not None and st.state == "confirmed" and st.version is not None and st.version >= version

    def done() -> bool:
        now = states()
        return bool(failed()) or all(confirmed(now.get(e)) for e in euis)

    await link.watch(done, timeout)
    bad = failed()
    if bad:
        names = "; ".join(f"{st.eui} {st.state}: {st.reason or 'no reason given'}" for st in bad)
        raise RolloutError(f"rollout of version {version} stopped in wave {wave}: {names}. "
                           f"Later waves were not published{KEPT}; fix the config and run fleet "
                           "rollout again", 1)
    now = states()
    late = [e for e in euis if not confirmed(now.get(e))]
    if late:
        def last(e: str) -> str:
            st = now.get(e)
            return "no state" if st is None else f"{st.state} version {st.version}"
        names = ", ".join(f"{e} ({last(e)})" for e in late)
        raise RolloutError(f"rollout of version {version} stopped in wave {wave}: no confirmation within "
                           f"{timeout:g}s from {names}. Later waves were not published{KEPT}", 2)


async def rollout(repo: Repository, link: FleetLink, data: bytes, waves: Sequence[WaveStep], *,
                  timeout: float, say: Say) -> int:  # noqa: ASYNC109
    """Roll ``data`` (an already checked fleet-wide config) out in waves; returns its version."""
    states = await read_states(link)
    if not states:
        raise FleetError(f"MQTT broker {link.broker.shown}: no gateway has reported under "
                         f"{link.prefix}/gateway/+/state/config (wrong --prefix?); nothing to roll out to")
    made: list[str] = list(repo.book.get("rollout_targets", []))
    targets = repo.targets()
    own = [e for e in states if config_target(e) in targets and config_target(e) not in made]
    for e in own:
        say(f"{e} keeps its own {config_target(e)} (fleet set-config --gateway): not part of this rollout")
    fleet = sorted(e for e in states if e not in own)
    if not fleet:
        raise FleetError("every gateway that reported has a config of its own: nothing to roll out to")
    plan = plan_waves(waves, fleet)
    version = repo.bump_version()
    repo.save()
    say(f"rolling out version {version} to {len(fleet)} gateway(s) in {len(plan)} wave(s)")
    for k, new in enumerate(plan, start=1):
        final = k == len(plan)
        waiting = fleet if final else new
        before = {e: link.messages.get(_state_topic(link, e)) for e in waiting}
        if final:
            repo.add_target(ALL, data, version)
            for t in made:
                repo.remove_target(t, delete=True)
            made = []
        else:
            for e in new:
                t = config_target(e)
                repo.add_target(t, data, version)
                if t not in made:
                    made.append(t)
        repo.book["rollout_targets"] = made
        repo.save()
        repo.publish()
        result = await mirror(link, repo)
        if result.warning:
            say(f"warning: {result.warning}")
        await notify(link, version, waiting, broadcast=final)
        what = f"{ALL} for every gateway" if final else f"{len(new)} gateway(s): {', '.join(new)}"
        say(f"wave {k}: version {version} published to {what} ({result.published} file(s) mirrored, "
            f"{result.cleared} cleared); waiting for {len(waiting)} confirmation(s)")
        await _wait(link, waiting, version, timeout, k, before)
        say(f"wave {k}: confirmed by {len(waiting)} gateway(s)")
    return version

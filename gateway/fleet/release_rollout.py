"""A release in waves: a few gateways first, the rest once they run it and have confirmed it.

Like a config rollout (rollout.py): wave k gives its new gateways per-gateway release targets
(``releases/<eui>/schwebe_<arch>.deb``, hard links of one file), publishes, notifies them and
waits until each one's retained ``state/update`` says it runs the version with nothing on
trial; a gateway that reports the version ``rolled-back`` or ``refused`` stops the rollout and
no later wave is published. The last wave stores ``releases/all/schwebe_<arch>.deb`` and
removes the per-gateway targets the rollout made. Only gateways whose retained update state
names the package's architecture take part (self-update on, a packaged install).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.fleet import FleetError
from gateway.fleet.mqtt import FleetLink, mirror, notify, read_states
from gateway.fleet.release import add_release, release_target
from gateway.fleet.repo import Repository
from gateway.fleet.rollout import KEPT, RolloutError, Say, WaveStep, plan_waves
from gateway.update.deb import DebError, inspect

FAILED = ("rolled-back", "refused")


def update_filter(prefix: str) -> str:
    return f"{prefix}/gateway/+/state/update"


def update_states(messages: Mapping[str, bytes | None], prefix: str) -> dict[str, dict[str, Any]]:
    """EUI -> the retained update object (unreadable or cleared ones left out)."""
    out: dict[str, dict[str, Any]] = {}
    for topic, payload in messages.items():
        levels = topic.split("/")
        if (len(levels) < 4 or levels[-1] != "update" or levels[-2] != "state"
                or "/".join(levels[:-3]) != f"{prefix}/gateway" or not payload):
            continue
        try:
            st = json.loads(payload)
        except ValueError:
            continue
        if isinstance(st, dict):
            out[levels[-3]] = st
    return out


def _runs(st: Mapping[str, Any] | None, version: str) -> bool:
    return st is not None and st.get("running") == version and st.get("trying") is None


def _failed(st: Mapping[str, Any] | None, version: str) -> bool:
    return st is not None and st.get("outcome") in FAILED and st.get("version") == version


async def _wait(link: FleetLink, euis: Sequence[str], version: str, timeout: float, wave: int) -> None:  # noqa: ASYNC109
    def now() -> dict[str, dict[str, Any]]:
        return update_states(link.messages, link.prefix)

    def done() -> bool:
        st = now()
        return any(_failed(st.get(e), version) for e in euis) or all(_runs(st.get(e), version) for e in euis)

    await link.watch(done, timeout)
    st = now()
    bad = [e for e in euis if _failed(st.get(e), version)]
    if bad:
        names = "; ".join(f"{e} {st[e]['outcome']}: {st[e].get('reason') or 'no reason given'}" for e in bad)
        raise RolloutError(f"rollout of release {version} stopped in wave {wave}: {names}. Later waves "
                           f"were not published{KEPT}; publish a fixed release under a new version", 1)
    late = [e for e in euis if not _runs(st.get(e), version)]
    if late:
        def last(e: str) -> str:
            s = st.get(e)
            return "no update state" if s is None else f"running {s.get('running')}, trying {s.get('trying')}"
        raise RolloutError(f"rollout of release {version} stopped in wave {wave}: not running it within "
                           f"{timeout:g}s: " + ", ".join(f"{e} ({last(e)})" for e in late)
                           + f". Later waves were not published{KEPT}", 2)


async def rollout_release(repo: Repository, link: FleetLink, deb: Path, waves: Sequence[WaveStep], *,
                          timeout: float, say: Say) -> str:  # noqa: ASYNC109
    """Roll the package ``deb`` out in waves; returns its version."""
    try:
        info = inspect(deb)
    except DebError as exc:
        raise FleetError(f"not released: {exc}") from None
    reporting = await read_states(link)
    await link.retained(update_filter(link.prefix))
    updates = update_states(link.messages, link.prefix)
    arch = [e for e in sorted(set(reporting) | set(updates))
            if updates.get(e, {}).get("enabled") and updates[e].get("arch") == info.arch]
    for e in sorted(set(reporting) - set(arch)):
        say(f"{e} is left out: it reports no self-update for {info.arch} (state/update)")
    made: list[str] = list(repo.book.get("rollout_releases", []))
    targets = repo.targets()
    own = [e for e in arch if release_target(e, info.arch) in targets
           and release_target(e, info.arch) not in made]
    for e in own:
        say(f"{e} keeps its own {release_target(e, info.arch)} (fleet release --gateway): not part of this rollout")
    fleet = [e for e in arch if e not in own]
    if not fleet:
        raise FleetError(f"no gateway reports self-update for {info.arch} on {link.prefix}/gateway/+/state/update: "
                         "nothing to roll out to")
    plan = plan_waves(waves, fleet)
    say(f"rolling out release {info.version} to {len(fleet)} gateway(s) in {len(plan)} wave(s)")
    for k, new in enumerate(plan, start=1):
        final = k == len(plan)
        waiting = fleet if final else new
        if final:
            add_release(repo, deb, None)
            for t in made:
                repo.remove_target(t, delete=True)
            made = []
        else:
            for e in new:
                _, t = add_release(repo, deb, e)
                if t not in made:
                    made.append(t)
        repo.book["rollout_releases"] = made
        repo.save()
        repo.publish()
        await mirror(link, repo)  # the metadata naming the release; packages go over HTTPS
        await notify(link, repo.config_version, waiting, broadcast=final)
        what = f"{release_target(None, info.arch)} for every gateway" if final else \
            f"{len(new)} gateway(s): {', '.join(new)}"
        say(f"wave {k}: release {info.version} published to {what}; waiting for {len(waiting)} to run it")
        await _wait(link, waiting, info.version, timeout, k)
        say(f"wave {k}: {len(waiting)} gateway(s) run release {info.version}")
    return info.version

"""One honest answer for a technician: is this gateway ok, degraded or failing, why, and what to do.

Computed from /api/status's own figures (a pure function, so every rule is tested on its own).
"ok" only when data flows: every source heard from, every forwarder answered by its backend,
the buffer writing. This is readiness, not liveness: /healthz (systemd's watchdog) says only
that the process serves, so a backend outage never makes systemd restart a working gateway.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

#: A packet forwarder sends a PULL_DATA keepalive every few seconds and a stat every 30 s:
#: silence this long means it stopped (or never started).
SOURCE_SILENT_S: Final = 300.0
#: How long after start a source may stay silent before that counts as a problem.
START_GRACE_S: Final = 60.0

STATES: Final = ("ok", "degraded", "failing")


def _reason(component: str, problem: str, action: str, code: str,
            **params: Any) -> dict[str, Any]:
    """One reason; ``code`` and ``params`` let the page say it in the reader's language."""
    return {"component": component, "problem": problem, "action": action, "code": code,
            "params": {k: v for k, v in params.items() if v is not None}}


def verdict(status: Mapping[str, Any]) -> dict[str, Any]:
    """``{"state": "ok" | "degraded" | "failing", "reasons": [{component, problem, action}]}``."""
    failing: list[dict[str, Any]] = []
    degraded: list[dict[str, Any]] = []
    uptime = float((status.get("gateway") or {}).get("uptime_s") or 0.0)

    for name, c in (status.get("components") or {}).items():
        if not c.get("running") and name != "simulator":
            failing.append(_reason(name, f"stopped: {c.get('last_error') or 'no error given'}",
                                   "restart the gateway (systemctl restart schwebe); if it comes "
                                   "back, send the log (journalctl -u schwebe) to support",
                                   "component_stopped", error=c.get("last_error")))

    for name, src in (status.get("sources") or {}).items():
        kind = src.get("kind")
        if kind in ("modbus", "gnss"):
            what = "RS-485 adapter" if kind == "modbus" else "GNSS receiver"
            if not src.get("connected"):
                problem = f"{what} {src.get('port')} missing or unusable"
                if src.get("last_error"):
                    problem += f": {src['last_error']}"
                degraded.append(_reason(name, problem,
                                        "check the USB cable and the adapter "
                                        f"(ls -l {src.get('port')}; dmesg | tail)",
                                        "gnss_missing" if kind == "gnss" else "rs485_missing",
                                        port=src.get("port"), error=src.get("last_error")))
                continue
            for u in src.get("units") or []:
                if u.get("status") == "unknown":
                    degraded.append(_reason(name, f"wired detector unit {u.get('unit')} "
                                            f"({u.get('spot_id')}) does not answer",
                                            "check that detector's RS-485 wiring and power",
                                            "wired_unit_silent", unit=u.get("unit"),
                                            spot=u.get("spot_id")))
        elif "datagrams" in src:  # a packet-forwarder (GWMP) source
            where = src.get("bound") or "its port"
            gateways = src.get("gateways") or {}
            if not src.get("datagrams"):
                if uptime >= START_GRACE_S:
                    degraded.append(_reason(name, f"packet forwarder never heard on {where}",
                                            "check lora_pkt_fwd (systemctl status lora-pkt-fwd) "
                                            f"and that its server address is {where}",
                                            "pf_never_heard", where=where))
                continue
            ages = [g.get("last_seen_s_ago") for g in gateways.values()]
            seen = [a for a in ages if a is not None]
            if seen and min(seen) > SOURCE_SILENT_S:
                degraded.append(_reason(name, f"packet forwarder not heard for "
                                        f"{min(seen) / 60:.0f} min on {where}",
                                        "check lora_pkt_fwd (systemctl status lora-pkt-fwd) "
                                        "and the concentrator", "pf_silent", where=where,
                                        minutes=round(min(seen) / 60)))

    forwarders = status.get("forwarders") or {}
    down = []
    for name, f in forwarders.items():
        if f.get("connected"):
            continue
        lag = int(f.get("lag_records") or 0)
        if not f.get("last_error") and not lag:
            continue  # idle and never asked to deliver: nothing has gone wrong yet
        down.append(name)
        never = not f.get("acked") and not f.get("last_ack_age_s")
        problem = (f"never reached its backend: {f.get('last_error')}" if never
                   else f"backend not answering: {f.get('last_error') or 'no answer yet'}")
        degraded.append(_reason(f"forward:{name}", problem,
                                "check the network path and the backend's address and "
                                f"credentials; {lag} records wait in the buffer, none is lost",
                                "fwd_never_reached" if never else "fwd_not_answering",
                                error=f.get("last_error"), lag=lag))
    if forwarders and len(down) == len(forwarders):
        failing.append(_reason("forwarders", "no backend receives data",
                               "check the gateway's uplink (LTE/fibre) first: every backend is down",
                               "all_backends_down"))

    buf = status.get("buffer") or {}
    for ev in buf.get("recovery_events") or []:
        degraded.append(_reason("buffer", f"buffer store was corrupt ({ev.get('time')}); "
                                f"moved aside to {ev.get('moved_to')}",
                                "plan to replace the SD card; recover what is readable with "
                                "schwebe buffer export --file <moved file>", "store_corrupt",
                                time=ev.get("time"), moved_to=ev.get("moved_to")))
    write_errors = sum(int(n) for n in (buf.get("write_errors") or {}).values())
    if write_errors and buf.get("last_write_error"):
        failing.append(_reason("buffer", f"cannot write the buffer: {buf['last_write_error']}",
                               "check the disk: full (df -h) or read-only (dmesg); records wait "
                               "in memory meanwhile", "buffer_unwritable",
                               error=buf["last_write_error"]))
    state = "failing" if failing else "degraded" if degraded else "ok"
    return {"state": state, "reasons": failing + degraded}

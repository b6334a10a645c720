"""One or two monitors doing ordinary things: the invariants QEMU keeps."""

from __future__ import annotations

from tools.explore.harness import QmpClient, Setup, scenario

#: in-band requests a QMP monitor queues before it suspends (QMP_REQ_QUEUE_LEN_MAX)
QUEUE_LEN_MAX = 8


@scenario(
    "oob-vs-inband",
    "an out-of-band x-oob-test releases an in-band one that blocks the main loop",
    anchors=("qemu_mutex_lock(qmp_queue_lock", "qemu_event_set", "qemu_event_wait"),
)
def oob_vs_inband(s: Setup) -> None:
    mon = s.qmp("mon0")

    def c0() -> None:
        mon.negotiate(oob=True)
        blocked = mon.send("x-oob-test", {"lock": True})
        after = mon.send("query-name")
        release = mon.send("x-oob-test", {"lock": False}, oob=True)
        mon.check(mon.reply(release) == {"return": {}, "id": release}, "OOB release failed")
        mon.check(mon.reply(blocked) == {"return": {}, "id": blocked}, "in-band lock failed")
        mon.check(mon.reply(after) == {"return": {}, "id": after}, "query-name failed")
        inband = [i for i in mon.arrived if i in (blocked, after)]
        mon.check(inband == [blocked, after], f"in-band replies out of order: {inband}")

    s.client("c0", c0)


@scenario(
    "queue-full-suspend-resume",
    "more pipelined in-band requests than the queue holds: suspend, resume, none lost",
    anchors=("qemu_mutex_lock(qmp_queue_lock", "monitor_suspend", "monitor_resume"),
)
def queue_full_suspend_resume(s: Setup) -> None:
    mon = s.qmp("mon0")

    def c0() -> None:
        mon.negotiate(oob=True)
        ids = [mon.send("query-status") for _ in range(QUEUE_LEN_MAX + 3)]
        got = [mon.next_reply().get("id") for _ in ids]
        mon.check(got == ids, f"in-band replies out of order or lost: {got}")

    s.client("c0", c0)


@scenario(
    "two-monitors-round-robin",
    "two monitors pipelining in-band requests share the one dispatcher fairly",
    anchors=("qemu_mutex_lock(monitor_lock", "qemu_mutex_lock(qmp_queue_lock"),
)
def two_monitors_round_robin(s: Setup) -> None:
    for label in ("mon0", "mon1"):
        mon = s.qmp(label)

        def client(mon: QmpClient = mon) -> None:
            mon.negotiate()
            ids = [mon.send("query-status") for _ in range(4)]
            got = [mon.next_reply().get("id") for _ in ids]
            mon.check(got == ids, f"{mon.label}: replies out of order or lost: {got}")

        s.client("c" + label[-1], client)


@scenario(
    "event-fan-out",
    "stop and cont on one monitor: STOP and RESUME reach every monitor, in order",
    anchors=("qemu_mutex_lock(monitor_lock", "qemu_mutex_lock(mon_lock"),
)
def event_fan_out(s: Setup) -> None:
    m0, m1 = s.qmp("mon0"), s.qmp("mon1")
    ready = s.flag("m1_negotiated")

    def c0() -> None:
        m0.negotiate()
        ready.wait()
        m0.check("return" in m0.execute("stop"), "stop failed")
        m0.event("STOP")
        m0.check("return" in m0.execute("cont"), "cont failed")
        m0.event("RESUME")

    def c1() -> None:
        m1.negotiate()
        ready.set()
        m1.event("STOP")
        m1.event("RESUME")
        names = [e["event"] for e in m1.events]
        m1.check(not names, f"{m1.label}: unexpected events {names}")

    s.client("c0", c0)
    s.client("c1", c1)

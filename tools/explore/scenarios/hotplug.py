"""Monitors added and removed at run time (monitor-add, monitor-remove)."""

from __future__ import annotations

from tools.explore.harness import Setup, scenario


@scenario(
    "hotplug-self-removal",
    "a client removes the monitor it talks through: the reply arrives, then the end",
    anchors=("qemu_mutex_lock(monitor_lock", "qemu_mutex_lock(mon_lock", "aio_bh_schedule"),
)
def hotplug_self_removal(s: Setup) -> None:
    boot = s.qmp("mon0")
    dyn = s.pair("dyn0")

    def c0() -> None:
        boot.negotiate()
        reply = boot.execute("monitor-add", {"id": "dyn", "chardev": "dyn0"})
        boot.check(reply.get("return") == {}, f"monitor-add answered {reply!r}")
        dyn.negotiate()
        rid = dyn.send("monitor-remove", {"id": "dyn"})
        dyn.check(dyn.reply(rid) == {"return": {}, "id": rid}, "self-removal failed")
        dyn.expect_eof()
        listed = boot.execute("query-monitors").get("return", [])
        ids = [m.get("id") for m in listed]
        boot.check("dyn" not in ids, f"removed monitor still listed: {ids}")

    s.client("c0", c0)


@scenario(
    "monitor-remove-while-reading",
    "one client removes a monitor while its client pipelines requests into it",
    anchors=("qemu_mutex_lock(monitor_lock", "qemu_mutex_lock(qmp_queue_lock", "aio_bh_schedule"),
)
def monitor_remove_while_reading(s: Setup) -> None:
    boot = s.qmp("mon0")
    dyn = s.pair("dyn0")
    added = s.flag("dyn_negotiated")

    def c0() -> None:
        boot.negotiate()
        reply = boot.execute("monitor-add", {"id": "dyn", "chardev": "dyn0"})
        boot.check(reply.get("return") == {}, f"monitor-add answered {reply!r}")
        added.wait()
        reply = boot.execute("monitor-remove", {"id": "dyn"})
        boot.check(reply.get("return") == {}, f"monitor-remove answered {reply!r}")

    def c1() -> None:
        dyn.negotiate()
        added.set()
        ids = [dyn.send("query-status") for _ in range(4)]
        rest = dyn.expect_eof()
        got = [m.get("id") for m in rest if "event" not in m]
        dyn.check(got == ids[: len(got)], f"replies before the end out of order: {got}")

    s.client("c0", c0)
    s.client("c1", c1)

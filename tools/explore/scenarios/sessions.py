"""A connection's end while requests are queued: who gets which reply."""

from __future__ import annotations

from tools.explore.harness import Setup, scenario


@scenario(
    "disconnect-with-queued-requests",
    "a client hangs up with in-band requests queued, another connects on the same chardev",
    anchors=(
        "qemu_mutex_lock(qmp_queue_lock",
        "qemu_mutex_lock(mon_lock",
        "qatomic_set(connected",
        "qatomic_read(connected",
    ),
)
def disconnect_with_queued_requests(s: Setup) -> None:
    mon = s.qmp("mon0")

    def c0() -> None:
        mon.negotiate()
        for _ in range(3):
            mon.send("query-status")
        mon.hangup()
        mon.connect()
        mon.negotiate()
        rid = mon.send("query-name")
        mon.check(mon.reply(rid) == {"return": {}, "id": rid}, "query-name failed")

    s.client("c0", c0)


@scenario(
    "quit-with-queued-requests",
    "quit behind queued in-band requests: every earlier reply, then SHUTDOWN, then the end",
    anchors=("qemu_mutex_lock(qmp_queue_lock", "qemu_mutex_lock(mon_lock"),
)
def quit_with_queued_requests(s: Setup) -> None:
    mon = s.qmp("mon0")

    def c0() -> None:
        mon.negotiate()
        before = [mon.send("query-status") for _ in range(2)]
        quit = mon.send("quit")
        mon.send("query-status")  # may or may not be answered: QEMU is going
        for rid in before:
            mon.check("return" in mon.reply(rid), f"{rid} failed")
        mon.check(mon.reply(quit) == {"return": {}, "id": quit}, "quit failed")
        mon.event("SHUTDOWN")
        mon.expect_eof()

    s.client("c0", c0)

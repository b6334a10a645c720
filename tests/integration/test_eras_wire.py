"""The same pipelined client against ``-x-era 2.12`` and the default era,
over real UNIX sockets (issue 17's "Done when").

Monitor ``ma`` blocks the main loop in-band (``x-oob-test``) and later
releases it out-of-band; monitor ``mo`` pipelines nine in-band requests
meanwhile.  2.12 queues eight and drops the ninth with COMMAND_DROPPED;
the default era suspends ``mo`` at eight and answers all nine in order.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.integration.harness import launched
from tests.integration.test_transcripts import CASES, _expected, _first_difference, run_case

#: per era: extra -mon options, how an OOB request is spelt, what is dropped
ERA_TABLE = {
    "2.12": {"mon": ",x-oob=on", "oob": "run-oob", "dropped": ["q9"]},
    "current": {"mon": "", "oob": "exec-oob", "dropped": []},
}


def _oob_request(style: str, name: str, arguments: dict[str, object], req_id: str) -> str:
    if style == "run-oob":
        msg = {"execute": name, "arguments": arguments, "control": {"run-oob": True}}
    else:
        msg = {"exec-oob": name, "arguments": arguments}
    msg["id"] = req_id
    return json.dumps(msg) + "\n"


@pytest.mark.parametrize("era", list(ERA_TABLE))
def test_pipelined_client_while_main_loop_blocked(era: str) -> None:
    row = ERA_TABLE[era]
    extra = ["-x-era", era]
    for name in ("ma", "mo"):
        extra += [
            "-chardev", f"socket,id={name},path={{tmpdir}}/{name}.sock,server=on,wait=off",
            "-mon", f"{name},mode=control{row['mon']}",
        ]  # fmt: skip
    with launched("emu", extra) as inst:
        ma = inst.connect(os.path.join(inst.tmpdir, "ma.sock"), name="ma")
        mo = inst.connect(os.path.join(inst.tmpdir, "mo.sock"), name="mo")
        for client in (ma, mo):
            greeting = client.negotiate(oob=True)[1]
            assert greeting["QMP"]["version"]["qemu"]["major"] == (2 if era == "2.12" else 7)
        ma.send_cmd("x-oob-test", {"lock": True}, req_id="lock")
        ma.assert_silent()  # the main loop is inside the lock
        ids = [f"q{i}" for i in range(1, 10)]
        mo.send("".join(json.dumps({"execute": "query-status", "id": i}) + "\n" for i in ids))
        if row["dropped"]:
            event = mo.recv_event("COMMAND_DROPPED")[1]
            assert event["data"] == {"id": "q9", "reason": "queue-full"}
        else:
            mo.assert_silent()
        ma.send(_oob_request(row["oob"], "x-oob-test", {"lock": False}, "release"))
        assert ma.recv_reply("release")[1] == {"return": {}, "id": "release"}
        assert ma.recv_reply("lock")[1] == {"return": {}, "id": "lock"}
        answered = [i for i in ids if i not in row["dropped"]]
        assert [mo.recv_reply(i)[1]["id"] for i in answered] == answered
        mo.assert_silent()
        assert [m["event"] for _, m in mo.events] == []


def test_2_12_quit_reply_survives_the_responder_queue() -> None:
    """bugs.md 18: the quit reply is queued for the I/O thread; 2.12's
    cleanup flushes the queues after stopping it, so the reply arrives."""
    extra = [
        "-x-era", "2.12",
        "-chardev", "socket,id=mo,path={tmpdir}/mo.sock,server=on,wait=off",
        "-mon", "mo,mode=control,x-oob=on",
    ]  # fmt: skip
    with launched("emu", extra) as inst:
        mo = inst.connect(os.path.join(inst.tmpdir, "mo.sock"), name="mo")
        mo.negotiate(oob=True)
        mo.send_cmd("quit", req_id="bye")
        msgs = [m for _, m in mo.recv_until_eof()]
        assert {"return": {}, "id": "bye"} in msgs
        assert inst.wait_exit() == 0


# ---------------------------------------------------------------- conformance per era

#: the QEMU 7.2 transcripts each era replays byte for byte (versions are
#: masked); 2.12 replays none: without x-oob its greeting offers no "oob"
#: (and run-oob, ids and error order differ: see tests/monitor/test_eras.py)
TRANSCRIPT_ERAS = {"5.2": CASES, "7.2": CASES, "8.1": CASES, "2.12": []}


@pytest.mark.parametrize(
    ("era", "case"),
    [(era, case) for era, cases in TRANSCRIPT_ERAS.items() for case in cases],
    ids=[f"{era}-{case['name']}" for era, cases in TRANSCRIPT_ERAS.items() for case in cases],
)
def test_transcripts_in_era(era: str, case: dict[str, Any]) -> None:
    with launched("emu", ["-x-era", era, *case["extra_args"]], pretty=case["pretty"]) as inst:
        want, got = _expected(case), run_case(inst, case)
    assert got == want, _first_difference(case, want, got)

"""Each backend from ``-chardev`` options: parsing, its errors (QEMU 7.2's
texts, captured from qemu-system-x86_64's stderr) and its I/O."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from chardev.char import CHR_EVENT_CLOSED, CHR_EVENT_OPENED, qemu_chr_find, qemu_chr_help_text
from chardev.char_fe import G_IO_OUT, qemu_chr_fe_add_watch, qemu_chr_fe_write
from chardev.char_mux import MuxChardev
from chardev.char_opts import (
    qemu_chardev_opts,
    qemu_chr_new,
    qemu_chr_new_from_opts,
    qemu_chr_parse_compat,
    qemu_chr_parse_opts,
)
from chardev.char_qmp import qmp_chardev_add, qmp_query_chardev, qmp_ringbuf_read
from qapi.error import QapiError
from tests.chardev.conftest import Frontend, run_until
from util.qemu_option import qemu_opt_get, qemu_opt_get_bool, qemu_opts_parse

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def chardev(arg: str):
    return qemu_chr_new_from_opts(qemu_opts_parse(qemu_chardev_opts(), arg, True))


def error_of(arg: str) -> str:
    with pytest.raises(QapiError) as exc:
        chardev(arg)
    return exc.value.desc


NOENT = "No such file or directory"
LONG = "a" * 120
CLI_ERRORS = [
    ("socket,path=/tmp/x.sock", "chardev: no id specified"),
    ("id=c", 'chardev: "c" missing backend'),
    ("nosuch,id=c", "'nosuch' is not a valid char driver name"),
    ("fd,id=c", "Parameter 'driver' expects a non-abstract device type"),
    ("file,id=f", "chardev: file: no filename given"),
    ("file,id=f,path=/nonexistent/x", f"Could not open '/nonexistent/x': {NOENT}"),
    ("pipe,id=p", "chardev: pipe: no device path given"),
    ("pipe,id=p,path=/nonexistent/x", f"Could not open '/nonexistent/x': {NOENT}"),
    ("socket,id=s", "Unable to parse FD number "),
    ("socket,id=s,path=/a,host=h", "None or one of 'path', 'fd' or 'host' option required."),
    ("socket,id=s,host=h", "chardev: socket: no port given"),
    ("socket,id=s,path=/nonexistent/x,server=on,wait=off",
     f"Failed to bind socket to /nonexistent/x: {NOENT}"),
    ("socket,id=s,path=/nonexistent/x", f"Failed to connect to '/nonexistent/x': {NOENT}"),
    ("socket,id=s,path=/tmp/zz,reconnect=1,server=on",
     "'reconnect' option is incompatible with socket in server listen mode"),
    ("socket,id=s,path=/tmp/zz,wait=on",
     "'wait' option is incompatible with socket in client connect mode"),
    ("socket,id=s,path=/tmp/zz,delay=on,nodelay=on",
     "'delay' and 'nodelay' are mutually exclusive"),
    (f"socket,id=s,path={LONG},server=on,wait=off", f"UNIX socket path '{LONG}' is too long"),
    ("socket,id=s,host=127.0.0.1,port=0,ipv4=off,ipv6=off,server=on,wait=off",
     "Cannot disable IPv4 and IPv6 at same time"),
    ("socket,id=s,host=nosuchhost.invalid,port=1,server=on,wait=off",
     "address resolution failed for nosuchhost.invalid:1: Name or service not known"),
    ("mux,id=m", "chardev: mux: no chardev given"),
    ("mux,id=m,chardev=zz", "mux: base chardev zz not found"),
    ("ringbuf,id=r,size=3", "size of ringbuf chardev must be power of two"),
    ("ringbuf,id=r,mux=on,size=3", "size of ringbuf chardev must be power of two"),
    ("null,id=c,logfile=/nonexistent/x", f"Could not create '/nonexistent/x': {NOENT}"),
    ("null,,x,id=c", "'null,x' is not a valid char driver name"),
]  # fmt: skip


@pytest.mark.parametrize(("arg", "desc"), CLI_ERRORS)
def test_command_line_errors(chr_state, arg, desc):
    assert error_of(arg) == desc
    assert qmp_query_chardev() == []


def test_help_lists_the_drivers(chr_state, capsys):
    assert chardev("help") is None
    assert capsys.readouterr().out == qemu_chr_help_text()
    assert qemu_chr_help_text().startswith("Available chardev backend types: \n  stdio\n")


def test_socket_defaults_differ_between_command_line_and_qmp(chr_state):
    opts = qemu_opts_parse(qemu_chardev_opts(), "socket,id=s,path=/p,server=on,nodelay=on", True)
    assert qemu_chr_parse_opts(opts) == {
        "type": "socket",
        "data": {
            "logappend": False,
            "nodelay": True,
            "server": True,
            "wait": True,  # the command line waits unless wait=off
            "addr": {"type": "unix", "data": {"path": "/p", "tight": True, "abstract": False}},
        },
    }
    opts = qemu_opts_parse(qemu_chardev_opts(), "socket,id=t,host=h,port=1,to=3,ipv4=on", True)
    assert qemu_chr_parse_opts(opts)["data"] == {
        "logappend": False,
        "server": False,
        "addr": {"type": "inet", "data": {"host": "h", "port": "1", "to": 3, "ipv4": True}},
    }


def test_null_is_never_open_and_drops_output(chr_state):
    fe = Frontend().attach(chardev("null,id=n"))
    assert fe.events == []
    assert qemu_chr_fe_write(fe.be, b"gone") == 4
    assert qemu_chr_fe_add_watch(fe.be, G_IO_OUT, lambda o: False, None) == 0
    fe.detach()


def test_file_backend_writes_and_appends(chr_state, tmp_path):
    out = tmp_path / "out.txt"
    out.write_bytes(b"old\n")
    fe = Frontend().attach(chardev(f"file,id=f,path={out},append=on"))
    assert fe.events == [CHR_EVENT_OPENED]
    qemu_chr_fe_write(fe.be, b"new\n")
    assert out.read_bytes() == b"old\nnew\n"
    fe.detach()
    chardev(f"file,id=g,path={out}")
    assert out.read_bytes() == b""


def test_file_backend_reads_its_in_file_then_closes(chr_state, tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"x" * 5000)
    qmp_chardev_add("f", {"type": "file", "data": {"out": str(tmp_path / "o"), "in": str(src)}})
    fe = Frontend().attach(qemu_chr_find("f"))
    run_until(lambda: CHR_EVENT_CLOSED in fe.events)
    assert fe.data == b"x" * 5000
    fe.detach()


def test_pipe_backend_uses_in_and_out_fifos(chr_state, tmp_path):
    base = tmp_path / "p"
    os.mkfifo(f"{base}.in")
    os.mkfifo(f"{base}.out")
    fe = Frontend().attach(chardev(f"pipe,id=p,path={base}"))
    writer = os.open(f"{base}.in", os.O_WRONLY | os.O_NONBLOCK)
    reader = os.open(f"{base}.out", os.O_RDONLY | os.O_NONBLOCK)
    try:
        os.write(writer, b"ping")
        run_until(lambda: fe.data == b"ping")
        qemu_chr_fe_write(fe.be, b"pong")
        assert os.read(reader, 4) == b"pong"
    finally:
        os.close(writer)
        os.close(reader)
    fe.detach()


def test_pipe_backend_falls_back_to_one_path(chr_state, tmp_path):
    path = tmp_path / "single"
    os.mkfifo(path)
    chr = chardev(f"pipe,id=p,path={path}")
    assert chr.fd_in == chr.fd_out


def test_ringbuf_keeps_the_newest_output(chr_state):
    fe = Frontend().attach(chardev("ringbuf,id=r,size=8"))
    assert fe.events == [CHR_EVENT_OPENED]
    assert qemu_chr_fe_write(fe.be, b"abcdefghijk") == 11
    assert qmp_ringbuf_read("r", 100, None) == "defghijk"
    fe.detach()


def test_ringbuf_size_wraps_as_a_c_int(chr_state):
    assert chardev("ringbuf,id=r,size=4G").size == 65536  # 4G is 0 as an int: the default
    assert chardev("memory,id=m,size=1k").size == 1024


def test_logfile_records_what_was_written(chr_state, tmp_path):
    log = tmp_path / "log"
    fe = Frontend().attach(chardev(f"ringbuf,id=r,logfile={log}"))
    qemu_chr_fe_write(fe.be, b"logged")
    assert log.read_bytes() == b"logged"
    fe.detach()
    chardev(f"null,id=n,logfile={log},logappend=on")
    assert log.read_bytes() == b"logged"


def test_mux_on_creates_a_base(chr_state):
    chr = chardev("null,id=c,mux=on")
    assert isinstance(chr, MuxChardev) and qemu_chr_find("c-base") is not None
    assert sorted(c["label"] for c in qmp_query_chardev()) == ["c", "c-base"]


def test_duplicate_label_from_the_legacy_syntax(chr_state):
    chardev("null,id=c")
    with pytest.raises(QapiError) as exc:
        qemu_chr_new("c", "null")
    assert exc.value.desc == "attempt to add duplicate property 'c' to object (type 'container')"


# ---------------------------------------------------------------- legacy syntax


def compat(filename: str, permit_mux_mon: bool = True):
    return qemu_chr_parse_compat(qemu_chardev_opts(), "compat_monitor0", filename, permit_mux_mon)


def test_compat_unix_tcp_and_mon():
    opts = compat("unix:/tmp/u.sock,server,nowait")
    assert qemu_opt_get(opts, "backend") == "socket"
    assert qemu_opt_get(opts, "path") == "/tmp/u.sock"
    assert qemu_opt_get_bool(opts, "server", False) and not qemu_opt_get_bool(opts, "wait", True)
    opts = compat("tcp::4444,server=on")
    assert (qemu_opt_get(opts, "host"), qemu_opt_get(opts, "port")) == ("", "4444")
    opts = compat("mon:stdio")
    assert qemu_opt_get_bool(opts, "mux", False) and not qemu_opt_get_bool(opts, "signal", True)
    assert qemu_opt_get(compat("file:/tmp/f"), "path") == "/tmp/f"


@pytest.mark.parametrize(
    ("filename", "desc"),
    [
        ("foo", "'foo' is not a valid char driver"),
        ("unix:/tmp/u.sock,server=on,wait=off,bogus=1", "Invalid parameter 'bogus'"),
    ],
)
def test_compat_errors(filename, desc):
    with pytest.raises(QapiError) as exc:
        compat(filename)
    assert exc.value.desc == desc


def test_compat_silent_failure_and_mon_refused():
    assert compat("tcp:x") is None  # QEMU then prints only "parse error: tcp:x"
    with pytest.raises(QapiError, match=r"^mon: isn't supported in this context$"):
        compat("mon:stdio", permit_mux_mon=False)


def test_chardev_prefix_finds_an_existing_one(chr_state):
    chr = chardev("null,id=n")
    assert qemu_chr_new("x", "chardev:n") is chr
    assert qemu_chr_new("x", "chardev:nosuch") is None


def test_mon_prefix_attaches_a_monitor_through_the_hook(chr_state):
    attached = []
    chr_state.monitor_init_hmp = attached.append
    chr = qemu_chr_new("compat_monitor0", "mon:null", permit_mux_mon=True)
    assert attached == [chr] and isinstance(chr, MuxChardev)


# ---------------------------------------------------------------- stdio


STDIO_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    from chardev.char import qemu_chr_cleanup
    from chardev.char_opts import qemu_chardev_opts, qemu_chr_new_from_opts
    from chardev.char_fe import qemu_chr_fe_write
    from qapi.error import QapiError
    from tests.chardev.conftest import Frontend, run_until
    from util.main_loop import qemu_init_main_loop, qemu_main_loop_cleanup
    from util.qemu_option import qemu_opts_parse

    qemu_init_main_loop()
    opts = qemu_opts_parse(qemu_chardev_opts(), "stdio,id=s,signal=off", True)
    fe = Frontend().attach(qemu_chr_new_from_opts(opts))
    try:
        qemu_chr_new_from_opts(qemu_opts_parse(qemu_chardev_opts(), "stdio,id=t", True))
    except QapiError as e:
        sys.stderr.write(e.desc + "\\n")
    run_until(lambda: fe.events[-1:] == [4])
    qemu_chr_fe_write(fe.be, b"echo:" + bytes(fe.data))
    fe.detach()
    qemu_chr_cleanup()
    qemu_main_loop_cleanup()
    """
)


@pytest.mark.parametrize("from_file", [False, True], ids=["pipe", "regular-file"])
def test_stdio_in_a_subprocess(tmp_path, from_file):
    """Input from a pipe, or from a file (which epoll refuses: always ready)."""
    script = STDIO_SCRIPT.format(repo=REPO)
    if from_file:
        (tmp_path / "in").write_bytes(b"typed")
        with open(tmp_path / "in", "rb") as stdin:
            proc = subprocess.run(
                [sys.executable, "-c", script], stdin=stdin, capture_output=True, timeout=60
            )
    else:
        proc = subprocess.run(
            [sys.executable, "-c", script], input=b"typed", capture_output=True, timeout=60
        )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"echo:typed"
    assert proc.stderr.decode() == "cannot use stdio by multiple character devices\n"

"""Differential integration tier: one QMP specification, run against QEMU and the emulator.

Every test here drives a whole process over real UNIX sockets with QEMU's own
command-line syntax.  The same test body runs against ``qemu-system-x86_64``
(the reference, QEMU 7.2 on the machine the expectations were captured on)
and against the emulator (``python -m system``); see ``harness.py``.
"""

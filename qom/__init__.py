"""qom package: the QEMU Object Model subset monitors need."""

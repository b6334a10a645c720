"""The explorer: deterministic, replayable interleavings of the whole
emulator (docs/explorer.md)."""

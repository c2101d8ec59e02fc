"""Pure array operations: explicit parameters in, arrays out; no I/O, no random numbers."""

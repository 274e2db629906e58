"""Model and data I/O: formats in and out (with their safety checks), datasets and splits, atomic files."""

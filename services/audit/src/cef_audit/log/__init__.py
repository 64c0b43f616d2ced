"""The audit log itself: tables, the sequencer that appends, verification and signed checkpoints."""

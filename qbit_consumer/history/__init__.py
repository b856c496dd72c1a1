"""The audit trail: what the history stream holds, read back for a person (``trail``)."""

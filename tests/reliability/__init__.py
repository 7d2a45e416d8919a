"""The fault and hostile-input suite (make reliability), a file per scenario."""

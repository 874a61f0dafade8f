"""Log parsing: raw log lines into header fields and a content template."""

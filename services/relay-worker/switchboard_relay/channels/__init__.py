"""Channel adaptors, one folder per upstream kind."""

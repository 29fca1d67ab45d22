"""Remote configuration, gateway side (issue 11)."""

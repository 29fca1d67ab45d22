"""Remote configuration, gateway side (issue 11)."""

#: Largest on-site config bundle accepted (bytes): metadata plus one config target.
MAX_BUNDLE = 4 << 20

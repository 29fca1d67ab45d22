"""Sources: one module per kind of thing that feeds the gateway (radio, wired, GNSS).

Drivers know hardware and local protocols and hand plain values to callbacks;
they never know about buffers or backends.
"""

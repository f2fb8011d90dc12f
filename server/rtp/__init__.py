"""RTP out (``output.transport``): packets, SDP and the destination policy are
sans-I/O units; ``sender`` is the UDP edge."""

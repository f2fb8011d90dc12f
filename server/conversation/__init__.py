"""The conversation core (sans-I/O) and what it needs: lifecycle, set-up, ports, liveness."""

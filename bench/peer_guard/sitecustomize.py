"""Installs bench/peer_guard/loopback_guard.py in a peer's interpreter at start-up."""

import loopback_guard

loopback_guard.install()

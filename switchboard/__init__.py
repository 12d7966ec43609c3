"""Switchboard's command line and the process runner that wires services together."""

"""Code shared by every Switchboard service: contracts, settings and backend layers."""

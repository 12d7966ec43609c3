"""switchboard_relay"""

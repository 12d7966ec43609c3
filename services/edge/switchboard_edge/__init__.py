"""switchboard_edge"""

"""switchboard_accounting"""

"""switchboard_knowledge"""

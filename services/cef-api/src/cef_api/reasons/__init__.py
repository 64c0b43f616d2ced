"""reasons"""

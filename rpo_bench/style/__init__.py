"""style"""

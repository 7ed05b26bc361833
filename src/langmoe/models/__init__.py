"""langmoe.models"""

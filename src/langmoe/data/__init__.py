"""langmoe.data"""

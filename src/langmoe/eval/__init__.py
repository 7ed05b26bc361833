"""langmoe.eval"""

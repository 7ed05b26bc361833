"""langmoe.methods"""

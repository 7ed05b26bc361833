"""langmoe.train"""

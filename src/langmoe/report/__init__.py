"""langmoe.report"""

"""langmoe.pipeline"""

"""stockgate engine"""

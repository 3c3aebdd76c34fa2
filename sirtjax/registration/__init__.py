"""Differentiable registration in physical space (thesis 5.3.3, paper 001)."""

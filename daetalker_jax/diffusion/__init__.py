"""Gaussian diffusion (schedule.py) and the lax.scan DDIM sampler / inverter (ddim.py)."""

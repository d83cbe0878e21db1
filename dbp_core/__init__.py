"""dbp-lab core: addressed noise, diffusion, purification, attacks, ADDT."""

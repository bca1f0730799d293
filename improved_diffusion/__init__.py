"""DDPM as in Nichol & Dhariwal 2021 (improved diffusion), with openai/improved-diffusion's
API, flag names and checkpoint layout."""

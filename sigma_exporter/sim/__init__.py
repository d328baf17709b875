"""Tooling, never imported by the runtime: simulator, scenarios, fake NVML, demo."""
